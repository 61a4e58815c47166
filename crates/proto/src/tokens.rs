//! Anonymous send tokens: a verifiable oblivious pseudorandom function
//! (VOPRF, RFC 9497, ciphersuite ristretto255-SHA512, through the `voprf`
//! crate).
//!
//! A logged-in device picks random nonces, blinds them and has the relay
//! evaluate the blinded elements under the day's key ([`TokenIssuer`]); it
//! unblinds the answers into tokens ([`TokenRequest::finish`]), checking the
//! relay's proof that it used the day's public key. A token is a nonce and
//! the function's output on it: the relay can check it with its key, but
//! cannot tell which issuance it came from, since it never saw the nonce
//! unblinded. Spending a token therefore proves "some account the relay
//! admitted paid for this", not which one.
//!
//! Keys are derived per day from the relay's token secret (RFC 9497's
//! `DeriveKeyPair` with the day in its info), so every node of a cluster
//! that shares the secret issues and checks the same tokens, and a day's
//! unspent tokens die with its key. The proof binds each answer to the
//! day's public key; a relay that used a key of its own for one device
//! (to recognise its tokens later) is caught only by devices that compare
//! public keys, which [`TokenRequest::finish`] leaves to its caller.

use std::fmt;

use voprf::{BlindedElement, EvaluationElement, Group, Proof, Ristretto255, VoprfClient, VoprfServer};

/// Bytes of a blinded or evaluated element, and of a public key (a
/// compressed ristretto255 point).
pub const ELEMENT_BYTES: usize = 32;
/// Bytes of an issuance proof (two scalars).
pub const PROOF_BYTES: usize = 64;
/// Bytes of a token's nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a token's output (SHA-512).
pub const OUTPUT_BYTES: usize = 64;
/// Seconds in one key day.
pub const DAY_SECS: u64 = 24 * 3600;

type Suite = Ristretto255;

/// Why tokens could not be issued or finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A blinded or evaluated element is not a valid group element.
    #[error("a token element is not a valid group element")]
    BadElement,
    /// The relay's proof does not verify against the public key it named:
    /// it did not evaluate every element with that one key.
    #[error("the relay's token proof does not verify")]
    BadProof,
    /// The answer does not match the request (count), or its key day is
    /// not today's.
    #[error("the relay's tokens do not match the request")]
    Mismatch,
    /// The day's key could not be derived from the secret.
    #[error("the token key could not be derived")]
    KeyDerivation,
}

/// The key day of Unix time `now` (seconds).
pub fn day_of(now: u64) -> u64 {
    now / DAY_SECS
}

/// One spendable token: a day, a nonce and the day's function on it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The key day it was issued under.
    pub day: u64,
    /// The random input.
    pub nonce: [u8; NONCE_BYTES],
    /// The day's pseudorandom function of the nonce.
    pub output: [u8; OUTPUT_BYTES],
}

impl Drop for Token {
    fn drop(&mut self) {
        // A bearer credential: gone from memory with its value.
        zeroize::Zeroize::zeroize(&mut self.nonce);
        zeroize::Zeroize::zeroize(&mut self.output);
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A token is a bearer credential: never in a log.
        f.debug_struct("Token").field("day", &self.day).finish_non_exhaustive()
    }
}

/// The relay's side for one key day: evaluates blinded elements for
/// logged-in devices and checks tokens when they are spent.
pub struct TokenIssuer {
    day: u64,
    server: VoprfServer<Suite>,
    /// The public key, serialized once.
    public_key: [u8; ELEMENT_BYTES],
}

impl TokenIssuer {
    /// The issuer of `day`, derived from the relay's token secret. (The
    /// derivation fails only with negligible probability: a zero scalar 256
    /// times in a row.)
    pub fn for_day(secret: &[u8; 32], day: u64) -> Result<Self, TokenError> {
        let mut info = b"hush send tokens, day ".to_vec();
        info.extend_from_slice(&day.to_be_bytes());
        let server = VoprfServer::new_from_seed(secret, &info).map_err(|_| TokenError::KeyDerivation)?;
        let public_key = element_bytes(Suite::serialize_elem(server.get_public_key()).as_slice());
        Ok(Self { day, server, public_key })
    }

    /// Its key day.
    pub fn day(&self) -> u64 {
        self.day
    }

    /// The day's public key, which the proof of every issuance refers to.
    pub fn public_key(&self) -> [u8; ELEMENT_BYTES] {
        self.public_key
    }

    /// Evaluates `blinded` elements, with one proof that all of them used
    /// the day's key.
    pub fn issue(
        &self,
        blinded: &[[u8; ELEMENT_BYTES]],
        rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
    ) -> Result<Issued, TokenError> {
        let blinded: Vec<BlindedElement<Suite>> = blinded
            .iter()
            .map(|bytes| BlindedElement::deserialize(bytes).map_err(|_| TokenError::BadElement))
            .collect::<Result<_, _>>()?;
        let prepared: Vec<_> = self.server.batch_blind_evaluate_prepare(blinded.iter()).collect();
        let result = self
            .server
            .batch_blind_evaluate_finish(rng, blinded.iter(), &prepared)
            .map_err(|_| TokenError::BadElement)?;
        let evaluated =
            result.messages.map(|element| element_bytes(element.serialize().as_slice())).collect();
        let mut proof = [0; PROOF_BYTES];
        proof.copy_from_slice(result.proof.serialize().as_slice());
        Ok(Issued { day: self.day, public_key: self.public_key(), evaluated, proof })
    }

    /// Whether `token` is one of this day's (not whether it was spent: the
    /// relay keeps the spent nonces).
    pub fn check(&self, token: &Token) -> bool {
        use subtle::ConstantTimeEq;
        if token.day != self.day {
            return false;
        }
        match self.server.evaluate(&token.nonce) {
            Ok(output) => bool::from(output.as_slice().ct_eq(&token.output)),
            Err(_) => false,
        }
    }
}

/// The relay's answer to an issuance request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The key day.
    pub day: u64,
    /// The day's public key.
    pub public_key: [u8; ELEMENT_BYTES],
    /// One evaluated element per blinded element, in order.
    pub evaluated: Vec<[u8; ELEMENT_BYTES]>,
    /// The proof that all were evaluated with `public_key`'s private key.
    pub proof: [u8; PROOF_BYTES],
}

/// A device's request for tokens, kept until the relay answers.
pub struct TokenRequest {
    nonces: Vec<[u8; NONCE_BYTES]>,
    states: Vec<VoprfClient<Suite>>,
    blinded: Vec<[u8; ELEMENT_BYTES]>,
}

impl TokenRequest {
    /// `count` fresh nonces, blinded.
    pub fn new(count: usize, rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng)) -> Self {
        let mut request = Self { nonces: Vec::new(), states: Vec::new(), blinded: Vec::new() };
        while request.nonces.len() < count {
            let mut nonce = [0; NONCE_BYTES];
            rng.fill_bytes(&mut nonce);
            // Fails only for an empty input.
            if let Ok(blind) = VoprfClient::<Suite>::blind(&nonce, rng) {
                request.blinded.push(element_bytes(blind.message.serialize().as_slice()));
                request.states.push(blind.state);
                request.nonces.push(nonce);
            }
        }
        request
    }

    /// The blinded elements to send.
    pub fn blinded(&self) -> &[[u8; ELEMENT_BYTES]] {
        &self.blinded
    }

    /// Unblinds the relay's answer into tokens, if its proof verifies and
    /// its key day is `today` (give or take one, for clocks that differ):
    /// the proof does not cover the day, and a relay could otherwise give
    /// each device a genuine key of a made-up day of its own, and know the
    /// device by the day on its tokens when they are spent.
    pub fn finish(self, issued: &Issued, today: u64) -> Result<Vec<Token>, TokenError> {
        if issued.evaluated.len() != self.nonces.len() || issued.day.abs_diff(today) > 1 {
            return Err(TokenError::Mismatch);
        }
        let public_key = Suite::deserialize_elem(&issued.public_key).map_err(|_| TokenError::BadElement)?;
        let proof = Proof::<Suite>::deserialize(&issued.proof).map_err(|_| TokenError::BadProof)?;
        let evaluated: Vec<EvaluationElement<Suite>> = issued
            .evaluated
            .iter()
            .map(|bytes| EvaluationElement::deserialize(bytes).map_err(|_| TokenError::BadElement))
            .collect::<Result<_, _>>()?;
        let outputs = VoprfClient::batch_finalize(&self.nonces, &self.states, &evaluated, &proof, public_key)
            .map_err(|_| TokenError::BadProof)?;
        let mut tokens = Vec::with_capacity(self.nonces.len());
        for (nonce, output) in self.nonces.iter().zip(outputs) {
            let output = output.map_err(|_| TokenError::BadProof)?;
            let mut bytes = [0; OUTPUT_BYTES];
            bytes.copy_from_slice(output.as_slice());
            tokens.push(Token { day: issued.day, nonce: *nonce, output: bytes });
        }
        Ok(tokens)
    }
}

fn element_bytes(bytes: &[u8]) -> [u8; ELEMENT_BYTES] {
    let mut out = [0; ELEMENT_BYTES];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const SECRET: [u8; 32] = [9; 32];

    fn rng() -> rand_core::OsRng {
        rand_core::OsRng
    }

    #[test]
    fn issued_tokens_check_under_their_day_only() {
        let issuer = TokenIssuer::for_day(&SECRET, 20_000).unwrap();
        let request = TokenRequest::new(5, &mut rng());
        let issued = issuer.issue(request.blinded(), &mut rng()).unwrap();
        let tokens = request.finish(&issued, 20_000).unwrap();
        assert_eq!(tokens.len(), 5);
        assert!(tokens.iter().all(|token| issuer.check(token)));
        // The same secret derives the same key (another node of a cluster).
        assert!(TokenIssuer::for_day(&SECRET, 20_000).unwrap().check(&tokens[0]));
        // Another day's key, or another relay's, does not accept them.
        let next_day = TokenIssuer::for_day(&SECRET, 20_001).unwrap();
        assert!(!next_day.check(&Token { day: 20_001, ..tokens[0].clone() }));
        assert!(!TokenIssuer::for_day(&[8; 32], 20_000).unwrap().check(&tokens[0]));
        // A forged output or a changed nonce does not check.
        let mut forged = tokens[1].clone();
        forged.output[0] ^= 1;
        assert!(!issuer.check(&forged));
        let mut moved = tokens[1].clone();
        moved.nonce[0] ^= 1;
        assert!(!issuer.check(&moved));
    }

    #[test]
    fn a_relay_evaluating_with_another_key_than_it_names_is_caught() {
        // The relay names today's key but evaluates with a key of its own,
        // to recognise this device's tokens when they are spent.
        let named = TokenIssuer::for_day(&SECRET, 20_000).unwrap();
        let tagging = TokenIssuer::for_day(&[1; 32], 20_000).unwrap();
        let request = TokenRequest::new(3, &mut rng());
        let mut issued = tagging.issue(request.blinded(), &mut rng()).unwrap();
        issued.public_key = named.public_key();
        assert_eq!(request.finish(&issued, 20_000), Err(TokenError::BadProof));
        // A genuine key of a made-up day (one per device, to know each
        // device by the day on its tokens) is refused.
        let request = TokenRequest::new(3, &mut rng());
        let far = TokenIssuer::for_day(&SECRET, 20_000 + 977).unwrap();
        let issued = far.issue(request.blinded(), &mut rng()).unwrap();
        assert_eq!(request.finish(&issued, 20_000), Err(TokenError::Mismatch));
        // An answer for another count, or garbage elements, is refused.
        let request = TokenRequest::new(3, &mut rng());
        let mut issued = named.issue(request.blinded(), &mut rng()).unwrap();
        issued.evaluated.pop();
        assert_eq!(request.finish(&issued, 20_000), Err(TokenError::Mismatch));
        assert_eq!(named.issue(&[[0xff; 32]], &mut rng()).unwrap_err(), TokenError::BadElement);
    }
}
