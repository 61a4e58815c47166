//! Issuing anonymous send tokens (see `hush_proto::tokens`) to logged-in
//! accounts, within a daily quota each.
//!
//! The token secret is a file of the data directory (`token.key`, made on
//! first start); every relay of a cluster that has the same file issues and
//! checks the same tokens. The quota is counted in memory only, and only
//! for the current day: a seized relay holds no record of how many tokens
//! anyone asked for. (A restart therefore resets the day's counts; a
//! deactivated account cannot log in, so it gets none whatever the count.)

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use hush_proto::tokens::{day_of, Issued, Token, TokenError, TokenIssuer, ELEMENT_BYTES};
use hush_proto::AccountId;
use zeroize::Zeroizing;

/// The token secret, its day's issuer and the day's counts.
pub(crate) struct TokenDesk {
    secret: Zeroizing<[u8; 32]>,
    per_day: u32,
    today: Mutex<Today>,
}

struct Today {
    day: u64,
    issuer: Option<Arc<TokenIssuer>>,
    /// Yesterday's issuer, to check tokens issued before midnight.
    yesterday: Option<Arc<TokenIssuer>>,
    issued: HashMap<AccountId, u32>,
}

/// Why tokens were not issued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The account's quota for today does not cover the request.
    Quota,
    /// The request's elements are not valid.
    Malformed,
}

impl TokenDesk {
    /// A desk issuing `per_day` tokens per account and day.
    pub(crate) fn new(secret: Zeroizing<[u8; 32]>, per_day: u32) -> Self {
        let today = Today { day: 0, issuer: None, yesterday: None, issued: HashMap::new() };
        Self { secret, per_day, today: Mutex::new(today) }
    }

    /// Loads `path`, creating a fresh secret (mode 0600) on first start.
    pub(crate) fn load_or_create_secret(path: &Path) -> std::io::Result<Zeroizing<[u8; 32]>> {
        use rand::RngCore;
        if !path.exists() {
            let mut secret = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(&mut secret[..]);
            crate::tls::write_private(path, &secret[..])?;
        }
        let bytes = Zeroizing::new(std::fs::read(path)?);
        let mut secret = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a 32-byte token secret", path.display()),
            ));
        }
        secret.copy_from_slice(&bytes);
        Ok(secret)
    }

    /// Evaluates `blinded` for `account` at `now`, counting them against
    /// its quota for the day, valid or not (an honest device never sends an
    /// invalid element, and refunding them would make invalid requests a
    /// free way to spend the relay's CPU). Run off the async threads: each
    /// element costs a scalar multiplication.
    pub(crate) fn issue(
        &self,
        account: AccountId,
        blinded: &[[u8; ELEMENT_BYTES]],
        now: u64,
    ) -> Result<Issued, Refusal> {
        let count = u32::try_from(blinded.len()).unwrap_or(u32::MAX);
        let issuer = {
            let mut today = self.today.lock().unwrap_or_else(PoisonError::into_inner);
            // The day only moves forward: a request that read the clock
            // just before midnight, or a clock stepped back, is counted in
            // the day the desk is in, and never resets the counts.
            self.turn(&mut today, day_of(now)).map_err(|_| Refusal::Malformed)?;
            let used = today.issued.entry(account).or_insert(0);
            if used.saturating_add(count) > self.per_day {
                return Err(Refusal::Quota);
            }
            *used += count;
            today.issuer.clone()
        };
        let issuer = issuer.ok_or(Refusal::Malformed)?;
        issuer.issue(blinded, &mut rand::rngs::OsRng).map_err(|_: TokenError| Refusal::Malformed)
    }
}

impl TokenDesk {
    /// Moves the desk to `day` if that is later than its own.
    fn turn(&self, today: &mut Today, day: u64) -> Result<(), TokenError> {
        if today.issuer.is_none() || day > today.day {
            let issuer = Arc::new(TokenIssuer::for_day(&self.secret, day)?);
            let yesterday = match &today.issuer {
                Some(previous) if today.day + 1 == day => Some(Arc::clone(previous)),
                _ => None,
            };
            *today = Today { day, issuer: Some(issuer), yesterday, issued: HashMap::new() };
        }
        Ok(())
    }

    /// Whether `token` was issued under today's or yesterday's key (whether
    /// it was spent already is the store's to say). One scalar
    /// multiplication (~70 µs).
    pub(crate) fn check(&self, token: &Token, now: u64) -> bool {
        self.issuer(token.day, now).is_some_and(|issuer| issuer.check(token))
    }

    /// The public key of `day`, if it is today or yesterday: the same for
    /// everyone who asks (see `ClientFrame::TokenKey`).
    pub(crate) fn public_key(&self, day: u64, now: u64) -> Option<[u8; ELEMENT_BYTES]> {
        self.issuer(day, now).map(|issuer| issuer.public_key())
    }

    /// The issuer of `day`, if it is today or yesterday at `now`.
    fn issuer(&self, day: u64, now: u64) -> Option<Arc<TokenIssuer>> {
        let mut today = self.today.lock().unwrap_or_else(PoisonError::into_inner);
        self.turn(&mut today, day_of(now)).ok()?;
        if day == today.day {
            today.issuer.clone()
        } else if day.checked_add(1) == Some(today.day) {
            if today.yesterday.is_none() {
                today.yesterday = TokenIssuer::for_day(&self.secret, day).ok().map(Arc::new);
            }
            today.yesterday.clone()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use hush_proto::tokens::{TokenRequest, DAY_SECS};

    use super::*;

    #[test]
    fn the_quota_is_per_account_and_day_and_tokens_check_under_the_day_key() {
        let desk = TokenDesk::new(Zeroizing::new([3; 32]), 10);
        let (alice, bob) = (AccountId([1; 20]), AccountId([2; 20]));
        let now = 20_000 * DAY_SECS + 5;
        let request = TokenRequest::new(6, &mut rand::rngs::OsRng);
        let issued = desk.issue(alice, request.blinded(), now).unwrap();
        let tokens = request.finish(&issued, 20_000).unwrap();
        let issuer = TokenIssuer::for_day(&[3; 32], 20_000).unwrap();
        assert!(tokens.iter().all(|token| issuer.check(token)));
        // 6 of 10 used: 5 more are refused, 4 are not; bob has his own 10.
        let five = TokenRequest::new(5, &mut rand::rngs::OsRng);
        assert_eq!(desk.issue(alice, five.blinded(), now).unwrap_err(), Refusal::Quota);
        assert_eq!(desk.issue(bob, five.blinded(), now).map(|issued| issued.evaluated.len()), Ok(5));
        let four = TokenRequest::new(4, &mut rand::rngs::OsRng);
        assert!(desk.issue(alice, four.blinded(), now).is_ok());
        assert_eq!(desk.issue(alice, four.blinded()[..1].as_ref(), now).unwrap_err(), Refusal::Quota);
        // The next day, a new key and a new quota.
        let tomorrow = desk.issue(alice, four.blinded(), now + DAY_SECS).unwrap();
        assert_eq!(tomorrow.day, 20_001);
        assert_ne!(tomorrow.public_key, issued.public_key);
        // Invalid elements are refused, and counted.
        assert_eq!(desk.issue(bob, &[[0xff; 32]; 5], now + DAY_SECS).unwrap_err(), Refusal::Malformed);
        let six = TokenRequest::new(6, &mut rand::rngs::OsRng);
        assert_eq!(desk.issue(bob, six.blinded(), now + DAY_SECS).unwrap_err(), Refusal::Quota);
        // A request whose clock still says yesterday is counted today: the
        // day never moves back, and the counts are not reset.
        assert_eq!(desk.issue(bob, six.blinded(), now).unwrap_err(), Refusal::Quota);
        assert_eq!(desk.issue(bob, &six.blinded()[..5], now).map(|issued| issued.day), Ok(20_001));
        // The key anyone is shown is the one issuances name, for today and
        // yesterday only.
        let later = now + DAY_SECS;
        assert_eq!(desk.public_key(20_001, later), Some(tomorrow.public_key));
        assert_eq!(desk.public_key(20_000, later), Some(issued.public_key));
        assert_eq!(desk.public_key(19_999, later), None);
        assert_eq!(desk.public_key(20_002, later), None);
    }
}
