//! The passphrase strength floor.
//!
//! A copied key file can be attacked offline, where nothing but the
//! passphrase's strength and Argon2id's cost stand in the way; a four-digit
//! code falls in minutes. So new passphrases are rated with zxcvbn (which
//! knows dictionaries, keyboard patterns, dates and l33t substitutions,
//! unlike a length rule) and refused below a floor: score 3 of 4 by
//! default, "safely unguessable" (about 10^10 guesses or more). Scripts and
//! tests may move the floor with `HUSH_MIN_PASSPHRASE_SCORE` (0-4); 0
//! turns it off.

use crate::error::ClientError;

/// The default floor: zxcvbn score 3.
pub const DEFAULT_MIN_SCORE: u8 = 3;

/// The environment variable that moves the floor.
pub const MIN_SCORE_VARIABLE: &str = "HUSH_MIN_PASSPHRASE_SCORE";

/// The floor in force: [`MIN_SCORE_VARIABLE`] if set, else the default.
pub fn min_score_from_env() -> Result<u8, ClientError> {
    match std::env::var(MIN_SCORE_VARIABLE) {
        Err(_) => Ok(DEFAULT_MIN_SCORE),
        Ok(value) => value.trim().parse::<u8>().ok().filter(|score| *score <= 4).ok_or_else(|| {
            ClientError::Invalid(format!("{MIN_SCORE_VARIABLE} must be a number from 0 to 4"))
        }),
    }
}

/// Refuses `passphrase` if zxcvbn scores it below `min_score`, saying why
/// and what would be strong enough. `context` holds words an attacker would
/// try first (the display name, the relay address).
pub fn check(passphrase: &str, min_score: u8, context: &[&str]) -> Result<(), ClientError> {
    if min_score == 0 {
        return Ok(());
    }
    let estimate = zxcvbn::zxcvbn(passphrase, context);
    let score = u8::from(estimate.score());
    if score >= min_score {
        return Ok(());
    }
    let mut reason = format!(
        "this passphrase is too weak (strength {score} of 4, at least {min_score} needed; \
         about 10^{:.0} guesses)",
        estimate.guesses_log10()
    );
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            reason.push_str(&format!(": {warning}"));
        }
    }
    reason.push_str(". Use four or more random words, or a long sentence only you would write");
    Err(ClientError::WeakPassphrase(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_common_passphrases_are_refused() {
        for weak in ["1234", "0000", "pw", "password", "P@ssw0rd!", "qwertyuiop", "alice1990", "letmein!"] {
            assert!(check(weak, DEFAULT_MIN_SCORE, &[]).is_err(), "{weak} was accepted");
        }
    }

    #[test]
    fn random_words_pass() {
        for strong in ["correct horse battery staple", "plinth-marmot-gusty-ocelot", "Xk9#vT2$pq8!Lm"] {
            assert!(check(strong, DEFAULT_MIN_SCORE, &[]).is_ok(), "{strong} was refused");
        }
    }

    #[test]
    fn the_name_counts_against_the_passphrase() {
        assert!(check("wilhelmina2", DEFAULT_MIN_SCORE, &["wilhelmina"]).is_err());
    }

    #[test]
    fn floor_zero_turns_the_check_off_and_the_error_says_why() {
        assert!(check("1", 0, &[]).is_ok());
        let error = check("1234", 3, &[]).unwrap_err().to_string();
        assert!(error.contains("too weak"), "{error}");
    }
}
