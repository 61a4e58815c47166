//! Invite strings: one self-contained string holding the relay's address,
//! its certificate pin and a secret code.
//!
//! Format: `hush://ADDRESS/PIN/CODE`, where ADDRESS is `host:port` (or
//! several, comma-separated: the relays of one cluster, which share one
//! certificate), PIN is the hex SHA-256 of the relay certificate and CODE
//! is base32.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::ids::CertificatePin;
use crate::limits::MAX_INVITE_CODE_BYTES;

/// Why an invite string could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InviteError {
    /// The string does not have the `hush://ADDRESS/PIN/CODE` shape.
    #[error("not a Hush invite (expected hush://ADDRESS/PIN/CODE)")]
    Shape,
    /// The pin part is not a certificate pin.
    #[error("the invite's certificate pin is malformed")]
    Pin,
    /// The code part is empty or too long.
    #[error("the invite's code is malformed")]
    Code,
}

/// A parsed invite. The code is a secret: it is not printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// The relay's `host:port`, or its cluster's, comma-separated (see
    /// [`is_relay_addresses`]).
    pub address: String,
    /// The relay's certificate pin.
    pub pin: CertificatePin,
    /// The secret invite code.
    pub code: String,
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invite")
            .field("address", &self.address)
            .field("pin", &self.pin)
            .field("code", &"***")
            .finish()
    }
}

/// True for a `HOST:PORT` a relay can be reached at: a host name, an IPv4
/// address or a bracketed IPv6 address, and a port. Nothing else (no
/// control characters, spaces or slashes) gets in through an invite or a
/// wipe code, since the address is printed in messages and errors.
pub fn is_relay_address(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else { return false };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']'));
    address.len() <= 255 && host_ok && !port.is_empty() && port.parse::<u16>().is_ok()
}

/// Most relay addresses one invite (or wipe code) lists.
pub const MAX_RELAY_ADDRESSES: usize = 8;

/// True for one relay address or several, comma-separated (at most
/// [`MAX_RELAY_ADDRESSES`]): the relays of one cluster, all serving the
/// same certificate, among which clients fail over.
pub fn is_relay_addresses(addresses: &str) -> bool {
    let count = addresses.split(',').count();
    count <= MAX_RELAY_ADDRESSES && addresses.split(',').all(is_relay_address)
}

impl fmt::Display for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hush://{}/{}/{}", self.address, self.pin, self.code)
    }
}

impl FromStr for Invite {
    type Err = InviteError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text.trim().strip_prefix("hush://").ok_or(InviteError::Shape)?;
        let mut parts = rest.split('/');
        let (Some(address), Some(pin), Some(code), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InviteError::Shape);
        };
        if !is_relay_addresses(address) {
            return Err(InviteError::Shape);
        }
        let pin = pin.parse().map_err(|_| InviteError::Pin)?;
        let code_ok = !code.is_empty()
            && code.len() <= MAX_INVITE_CODE_BYTES
            && code.bytes().all(|b| b.is_ascii_alphanumeric());
        if !code_ok {
            return Err(InviteError::Code);
        }
        Ok(Self { address: address.to_owned(), pin, code: code.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_round_trips() {
        let invite = Invite {
            address: "127.0.0.1:7443".into(),
            pin: CertificatePin([9u8; 32]),
            code: "abcdef234567".into(),
        };
        assert_eq!(invite.to_string().parse::<Invite>(), Ok(invite));
    }

    #[test]
    fn an_invite_lists_a_cluster_s_relays() {
        let pin = "00".repeat(32);
        let text = format!("hush://relay-a.example:7443,10.0.0.2:7443,[::1]:7443/{pin}/abc");
        let invite: Invite = text.parse().unwrap();
        assert_eq!(invite.address, "relay-a.example:7443,10.0.0.2:7443,[::1]:7443");
        assert_eq!(invite.to_string(), text);
    }

    #[test]
    fn bad_invites_are_refused() {
        assert_eq!("http://x/y/z".parse::<Invite>(), Err(InviteError::Shape));
        assert_eq!("hush://127.0.0.1:1/zz/abc".parse::<Invite>(), Err(InviteError::Pin));
        let pin = "00".repeat(32);
        assert_eq!(format!("hush://h:1/{pin}/").parse::<Invite>(), Err(InviteError::Code));
    }

    #[test]
    fn addresses_that_could_drive_a_terminal_are_refused() {
        let pin = "00".repeat(32);
        for address in ["h\u{1b}[2J:1", "h\n:1", "a b:1", "host", "host:", "host:99999", ":7443"] {
            assert_eq!(
                format!("hush://{address}/{pin}/abc").parse::<Invite>(),
                Err(InviteError::Shape),
                "{address:?}"
            );
        }
        for address in ["127.0.0.1:7443", "relay.example.org:443", "[::1]:7443"] {
            assert!(is_relay_address(address), "{address}");
        }
        for list in ["a:1,", ",a:1", "a:1,,b:2", "a:1, b:2", "a:1,b"] {
            assert_eq!(
                format!("hush://{list}/{pin}/abc").parse::<Invite>(),
                Err(InviteError::Shape),
                "{list:?}"
            );
        }
        let nine = ["h:1"; MAX_RELAY_ADDRESSES + 1].join(",");
        assert!(!is_relay_addresses(&nine), "more addresses than any cluster needs");
    }

    #[test]
    fn debug_hides_the_code() {
        let invite = Invite { address: "h:1".into(), pin: CertificatePin([0; 32]), code: "secret".into() };
        assert!(!format!("{invite:?}").contains("secret"));
    }
}
