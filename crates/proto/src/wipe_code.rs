//! Wipe codes: one self-contained string that lets whoever holds it order
//! a device to wipe itself: the relay's address and pin, the account and a
//! 256-bit secret whose hash the relay and the device keep.
//!
//! Format: `hush-wipe://ADDRESS/PIN/ACCOUNT/SECRET` (SECRET in base32).

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;

use crate::ids::{AccountId, CertificatePin};
use crate::invite::InviteError;

/// A parsed wipe code. The secret is not printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct WipeCode {
    /// The relay's `host:port`.
    pub address: String,
    /// The relay's certificate pin.
    pub pin: CertificatePin,
    /// The account whose device is to be wiped.
    pub account: AccountId,
    /// The secret.
    pub secret: [u8; 32],
}

impl fmt::Debug for WipeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WipeCode").field("address", &self.address).field("account", &self.account).finish()
    }
}

impl fmt::Display for WipeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = BASE32_NOPAD.encode(&self.secret).to_ascii_lowercase();
        write!(f, "hush-wipe://{}/{}/{}/{}", self.address, self.pin, self.account, secret)
    }
}

impl FromStr for WipeCode {
    type Err = InviteError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text.trim().strip_prefix("hush-wipe://").ok_or(InviteError::Shape)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [address, pin, account, secret] = parts.as_slice() else { return Err(InviteError::Shape) };
        if !crate::invite::is_relay_addresses(address) {
            return Err(InviteError::Shape);
        }
        let pin = pin.parse().map_err(|_| InviteError::Pin)?;
        let account = account.parse().map_err(|_| InviteError::Shape)?;
        let bytes =
            BASE32_NOPAD.decode(secret.to_ascii_uppercase().as_bytes()).map_err(|_| InviteError::Code)?;
        let secret = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| InviteError::Code)?;
        Ok(Self { address: (*address).to_owned(), pin, account, secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_code_round_trips_and_hides_its_secret_in_debug() {
        let code = WipeCode {
            address: "127.0.0.1:7443".into(),
            pin: CertificatePin([3; 32]),
            account: AccountId([4; 20]),
            secret: [5; 32],
        };
        assert_eq!(code.to_string().parse::<WipeCode>(), Ok(code.clone()));
        let secret_text = BASE32_NOPAD.encode(&[5; 32]).to_ascii_lowercase();
        assert!(!format!("{code:?}").contains(&secret_text));
        assert!("hush-wipe://a:1/zz/x/y".parse::<WipeCode>().is_err());
    }
}
