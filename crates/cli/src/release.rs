//! `hush release verify`: checks that downloaded files are the ones the
//! Hush release key signed. The release manifest lists each file's SHA-256;
//! the manifest is signed with minisign (Ed25519 over its BLAKE2b-512
//! hash, plus a signature over the trusted comment), and the public half
//! of the release key is pinned below, in the source a user can rebuild.
//!
//! Key design decision: the format is minisign's, so a release can also be
//! checked with `minisign -V -P KEY -m MANIFEST` by someone who does not run
//! Hush yet, and signed with minisign on an offline machine. Only
//! minisign's prehashed signatures (`ED`, its default) are accepted:
//! releases are never signed any other way.

use std::fmt;
use std::path::{Path, PathBuf};

use blake2::{Blake2b512, Digest as _};
use data_encoding::{BASE64, HEXLOWER};
use ed25519_dalek::{Signature as Ed25519Signature, VerifyingKey};
use sha2::Sha256;

/// The Hush release key (minisign public key, key id below). Its secret
/// half is kept offline by the release manager (docs/releases.md).
pub const RELEASE_KEY: &str = include_str!("../../../release/hush-release.pub");

/// The first line of every manifest.
pub const MANIFEST_HEADER: &str = "hush release manifest v1";

/// Why a release does not verify, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The public key could not be parsed.
    #[error("not a minisign public key: {0}")]
    BadKey(&'static str),
    /// The signature file could not be parsed.
    #[error("not a minisign signature file: {0}")]
    BadSignature(&'static str),
    /// Signed with another key.
    #[error(
        "the signature is from key {found}, not from the release key {expected}: \
         this manifest was not signed by the Hush release key"
    )]
    WrongKey {
        /// The key id in the signature.
        found: KeyId,
        /// The key id of the key we check against.
        expected: KeyId,
    },
    /// The manifest does not match its signature.
    #[error(
        "the signature does not match the manifest: the manifest was changed after it was signed, \
         or the signature belongs to another manifest"
    )]
    ManifestChanged,
    /// The trusted comment does not match its signature.
    #[error("the signature's trusted comment was changed after signing")]
    CommentChanged,
    /// The manifest is not a Hush release manifest.
    #[error("the manifest is malformed: {0}")]
    BadManifest(String),
    /// A file's hash differs from the manifest's.
    #[error("{file}: SHA-256 {actual}, the manifest says {expected}: this is not the released file")]
    HashMismatch {
        /// The file.
        file: String,
        /// Its hash.
        actual: String,
        /// The manifest's hash for it.
        expected: String,
    },
    /// A file the user asked about is not in the manifest.
    #[error("{0}: not in the manifest (it lists: {1})")]
    NotListed(String, String),
    /// A file could not be read.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// A minisign key id (8 bytes, shown as minisign shows it: hex, reversed).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyId([u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0.iter().rev() {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A minisign Ed25519 public key.
#[derive(Debug, Clone)]
pub struct PublicKey {
    id: KeyId,
    key: VerifyingKey,
}

/// The base64 line of a minisign file: the first line that is not a comment.
fn payload_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|line| !line.is_empty() && !line.starts_with("untrusted comment:"))
}

impl PublicKey {
    /// Parses a public key file (`untrusted comment:` line and base64
    /// line) or the bare base64 line.
    pub fn parse(text: &str) -> Result<Self, ReleaseError> {
        let line = payload_line(text).ok_or(ReleaseError::BadKey("no key line"))?;
        let bytes = BASE64.decode(line.as_bytes()).map_err(|_| ReleaseError::BadKey("not base64"))?;
        if bytes.len() != 42 {
            return Err(ReleaseError::BadKey("wrong length"));
        }
        if &bytes[..2] != b"Ed" {
            return Err(ReleaseError::BadKey("not an Ed25519 key"));
        }
        let id = KeyId(bytes[2..10].try_into().map_err(|_| ReleaseError::BadKey("key id"))?);
        let key: [u8; 32] = bytes[10..].try_into().map_err(|_| ReleaseError::BadKey("key"))?;
        let key =
            VerifyingKey::from_bytes(&key).map_err(|_| ReleaseError::BadKey("not a valid Ed25519 key"))?;
        Ok(Self { id, key })
    }

    /// The pinned release key.
    pub fn release() -> Result<Self, ReleaseError> {
        Self::parse(RELEASE_KEY)
    }

    /// Its key id.
    pub fn id(&self) -> KeyId {
        self.id
    }
}

/// A parsed minisign signature file.
struct SignatureFile {
    key_id: KeyId,
    signature: Ed25519Signature,
    trusted_comment: String,
    global: Ed25519Signature,
}

fn signature_from(line: &str) -> Result<Ed25519Signature, ReleaseError> {
    let bytes = BASE64.decode(line.as_bytes()).map_err(|_| ReleaseError::BadSignature("not base64"))?;
    let bytes: [u8; 64] = bytes.try_into().map_err(|_| ReleaseError::BadSignature("wrong length"))?;
    Ok(Ed25519Signature::from_bytes(&bytes))
}

impl SignatureFile {
    fn parse(text: &str) -> Result<Self, ReleaseError> {
        let mut lines = text.lines().map(|line| line.trim_end_matches('\r'));
        let untrusted = lines.next().ok_or(ReleaseError::BadSignature("empty"))?;
        if !untrusted.starts_with("untrusted comment:") {
            return Err(ReleaseError::BadSignature("no untrusted comment line"));
        }
        let line = lines.next().ok_or(ReleaseError::BadSignature("no signature line"))?;
        let bytes =
            BASE64.decode(line.trim().as_bytes()).map_err(|_| ReleaseError::BadSignature("not base64"))?;
        if bytes.len() != 74 {
            return Err(ReleaseError::BadSignature("wrong length"));
        }
        if &bytes[..2] != b"ED" {
            return Err(ReleaseError::BadSignature("not a prehashed (ED) minisign signature"));
        }
        let key_id = KeyId(bytes[2..10].try_into().map_err(|_| ReleaseError::BadSignature("key id"))?);
        let signature: [u8; 64] =
            bytes[10..].try_into().map_err(|_| ReleaseError::BadSignature("signature"))?;
        let trusted = lines.next().ok_or(ReleaseError::BadSignature("no trusted comment"))?;
        let trusted_comment = trusted
            .strip_prefix("trusted comment: ")
            .ok_or(ReleaseError::BadSignature("no trusted comment line"))?
            .to_owned();
        let global =
            signature_from(lines.next().ok_or(ReleaseError::BadSignature("no global signature"))?.trim())?;
        Ok(Self { key_id, signature: Ed25519Signature::from_bytes(&signature), trusted_comment, global })
    }
}

/// Checks `signature` (a minisign signature file) over `manifest` with
/// `key`; returns the trusted comment.
pub fn verify_signature(key: &PublicKey, manifest: &[u8], signature: &str) -> Result<String, ReleaseError> {
    let file = SignatureFile::parse(signature)?;
    if file.key_id != key.id {
        return Err(ReleaseError::WrongKey { found: file.key_id, expected: key.id });
    }
    let signed = Blake2b512::digest(manifest);
    key.key.verify_strict(&signed, &file.signature).map_err(|_| ReleaseError::ManifestChanged)?;
    let mut global = file.signature.to_bytes().to_vec();
    global.extend_from_slice(file.trusted_comment.as_bytes());
    key.key.verify_strict(&global, &file.global).map_err(|_| ReleaseError::CommentChanged)?;
    Ok(file.trusted_comment)
}

/// A parsed release manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The version released.
    pub version: String,
    /// The commit it was built from.
    pub commit: String,
    /// The toolchain it was built with (`rustc -vV`'s release line and the
    /// C compiler), to rebuild it with.
    pub toolchain: Option<String>,
    /// Each file's name and SHA-256 (hex).
    pub files: Vec<(String, String)>,
}

impl Manifest {
    /// Parses a manifest:
    ///
    /// ```text
    /// hush release manifest v1
    /// version 0.1.0
    /// commit <40 hex digits>
    /// sha256 <64 hex digits> <file name>
    /// ```
    ///
    /// plus, optionally, `toolchain <text>`. Other `key value` lines are
    /// ignored (later manifests may add fields; the whole manifest is
    /// signed either way). A field given twice, a file listed twice, and a
    /// file name other than letters, digits, `.`, `_`, `-` and `+` are
    /// refused.
    pub fn parse(text: &str) -> Result<Self, ReleaseError> {
        let bad = |why: &str| ReleaseError::BadManifest(why.to_owned());
        let mut lines = text.lines();
        if lines.next() != Some(MANIFEST_HEADER) {
            return Err(bad("it does not start with the manifest header"));
        }
        let (mut version, mut commit, mut toolchain, mut files) =
            (None, None, None, Vec::<(String, String)>::new());
        let once = |field: &mut Option<String>, value: &str, name: &str| {
            if field.replace(value.to_owned()).is_some() {
                return Err(bad(&format!("two {name} lines")));
            }
            Ok(())
        };
        for line in lines.filter(|line| !line.is_empty()) {
            match line.split_once(' ') {
                Some(("version", value)) => once(&mut version, value, "version")?,
                Some(("commit", value)) => once(&mut commit, value, "commit")?,
                Some(("toolchain", value)) => once(&mut toolchain, value, "toolchain")?,
                Some(("sha256", rest)) => {
                    let (hash, name) =
                        rest.split_once(' ').ok_or_else(|| bad("a sha256 line without a name"))?;
                    if hash.len() != 64 || HEXLOWER.decode(hash.as_bytes()).is_err() {
                        return Err(bad("a sha256 line whose hash is not 64 hex digits"));
                    }
                    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+');
                    if name.is_empty() || name == "." || name == ".." || !name.chars().all(safe) {
                        return Err(bad("a file name that is not a plain file name"));
                    }
                    if files.iter().any(|(file, _)| file == name) {
                        return Err(bad(&format!("{name} is listed twice")));
                    }
                    files.push((name.to_owned(), hash.to_owned()));
                }
                Some((key, _))
                    if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {}
                _ => return Err(bad("a line that is not `key value`")),
            }
        }
        Ok(Self {
            version: version.ok_or_else(|| bad("no version line"))?,
            commit: commit.ok_or_else(|| bad("no commit line"))?,
            toolchain,
            files,
        })
    }

    fn hash_of(&self, name: &str) -> Option<&str> {
        self.files.iter().find(|(file, _)| file == name).map(|(_, hash)| hash.as_str())
    }
}

/// SHA-256 of a file, in hex.
pub fn file_sha256(path: &Path) -> Result<String, ReleaseError> {
    use std::io::Read;
    let name = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|error| ReleaseError::Io(name.clone(), error))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer).map_err(|error| ReleaseError::Io(name.clone(), error))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(HEXLOWER.encode(&hasher.finalize()))
}

/// What a successful verification established.
#[derive(Debug)]
pub struct Verified {
    /// The manifest.
    pub manifest: Manifest,
    /// The signed trusted comment.
    pub trusted_comment: String,
    /// The files checked against it.
    pub files: Vec<PathBuf>,
}

/// Verifies the manifest at `manifest_path` with its signature, then each
/// of `files` (by file name) against it; with no files, every file the
/// manifest lists, next to the manifest.
pub fn verify(
    key: &PublicKey,
    manifest_path: &Path,
    signature_path: &Path,
    files: &[PathBuf],
) -> Result<Verified, ReleaseError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| ReleaseError::Io(path.display().to_string(), error))
    };
    let manifest_bytes = read(manifest_path)?;
    let signature = String::from_utf8_lossy(&read(signature_path)?).into_owned();
    let trusted_comment = verify_signature(key, &manifest_bytes, &signature)?;
    let text =
        std::str::from_utf8(&manifest_bytes).map_err(|_| ReleaseError::BadManifest("not UTF-8".into()))?;
    let manifest = Manifest::parse(text)?;
    let files: Vec<PathBuf> = if files.is_empty() {
        let dir = manifest_path.parent().unwrap_or(Path::new("."));
        manifest.files.iter().map(|(name, _)| dir.join(name)).collect()
    } else {
        files.to_vec()
    };
    for path in &files {
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let listed = manifest.files.iter().map(|(file, _)| file.as_str()).collect::<Vec<_>>().join(", ");
        let expected =
            manifest.hash_of(&name).ok_or_else(|| ReleaseError::NotListed(name.clone(), listed))?;
        let actual = file_sha256(path)?;
        if actual != expected {
            return Err(ReleaseError::HashMismatch {
                file: path.display().to_string(),
                actual,
                expected: expected.to_owned(),
            });
        }
    }
    Ok(Verified { manifest, trusted_comment, files })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    /// A throwaway key, as minisign would write it.
    fn keypair(seed: u8) -> (SigningKey, PublicKey, [u8; 8]) {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let id = [seed, 1, 2, 3, 4, 5, 6, 7];
        let mut bytes = b"Ed".to_vec();
        bytes.extend_from_slice(&id);
        bytes.extend_from_slice(signing.verifying_key().as_bytes());
        let text = format!("untrusted comment: minisign public key\n{}\n", BASE64.encode(&bytes));
        (signing, PublicKey::parse(&text).unwrap(), id)
    }

    /// A minisign signature file (prehashed, as minisign 0.11 signs).
    fn sign(signing: &SigningKey, id: [u8; 8], data: &[u8], comment: &str) -> String {
        let signature = signing.sign(&Blake2b512::digest(data));
        let mut line = b"ED".to_vec();
        line.extend_from_slice(&id);
        line.extend_from_slice(&signature.to_bytes());
        let mut global = signature.to_bytes().to_vec();
        global.extend_from_slice(comment.as_bytes());
        format!(
            "untrusted comment: signature from minisign secret key\n{}\ntrusted comment: {comment}\n{}\n",
            BASE64.encode(&line),
            BASE64.encode(&signing.sign(&global).to_bytes())
        )
    }

    #[test]
    fn a_signature_verifies_and_any_change_is_refused_with_its_reason() {
        let (signing, key, id) = keypair(7);
        let manifest = b"hush release manifest v1\nversion 0.1.0\ncommit abc\n";
        let signature = sign(&signing, id, manifest, "hush 0.1.0");
        assert_eq!(verify_signature(&key, manifest, &signature).unwrap(), "hush 0.1.0");
        // The manifest changed.
        let changed = b"hush release manifest v1\nversion 0.1.1\ncommit abc\n";
        assert!(matches!(verify_signature(&key, changed, &signature), Err(ReleaseError::ManifestChanged)));
        // The trusted comment changed.
        let forged = signature.replace("trusted comment: hush 0.1.0", "trusted comment: hush 9.9.9");
        assert!(matches!(verify_signature(&key, manifest, &forged), Err(ReleaseError::CommentChanged)));
        // Another key signed it.
        let (other, _, other_id) = keypair(8);
        let theirs = sign(&other, other_id, manifest, "hush 0.1.0");
        assert!(matches!(verify_signature(&key, manifest, &theirs), Err(ReleaseError::WrongKey { .. })));
        // Another key that claims our key id.
        let impostor = sign(&other, id, manifest, "hush 0.1.0");
        assert!(matches!(verify_signature(&key, manifest, &impostor), Err(ReleaseError::ManifestChanged)));
        // Garbage.
        assert!(matches!(verify_signature(&key, manifest, "nonsense"), Err(ReleaseError::BadSignature(_))));
        // A legacy (not prehashed) signature over the same bytes: refused,
        // releases are only ever signed prehashed.
        let raw = signing.sign(manifest);
        let mut line = b"Ed".to_vec();
        line.extend_from_slice(&id);
        line.extend_from_slice(&raw.to_bytes());
        let mut global = raw.to_bytes().to_vec();
        global.extend_from_slice(b"hush 0.1.0");
        let legacy = format!(
            "untrusted comment: x\n{}\ntrusted comment: hush 0.1.0\n{}\n",
            BASE64.encode(&line),
            BASE64.encode(&signing.sign(&global).to_bytes())
        );
        assert!(matches!(verify_signature(&key, manifest, &legacy), Err(ReleaseError::BadSignature(_))));
    }

    #[test]
    fn the_pinned_release_key_parses() {
        let key = PublicKey::release().expect("the pinned key parses");
        assert!(RELEASE_KEY.contains(&key.id().to_string()), "the key file names its key id");
    }

    #[test]
    fn manifests_are_parsed_strictly() {
        let hash = "ab".repeat(32);
        let text = format!("{MANIFEST_HEADER}\nversion 0.1.0\ncommit c0ffee\nsha256 {hash} hush\n");
        let manifest = Manifest::parse(&text).unwrap();
        assert_eq!(manifest.files, [("hush".to_owned(), hash.clone())]);
        assert_eq!(manifest.toolchain, None);
        // A field a later release adds is ignored.
        let later = format!("{text}toolchain rustc 1.95.0\nbuilt_on reproducible\n");
        assert_eq!(Manifest::parse(&later).unwrap().toolchain.as_deref(), Some("rustc 1.95.0"));
        for bad in [
            format!("{MANIFEST_HEADER}\nversion 0.1.0\nversion 0.2.0\ncommit c\n"),
            format!(
                "{MANIFEST_HEADER}\nversion 0.1.0\ncommit c\nsha256 {hash} hush\nsha256 {} hush\n",
                "cd".repeat(32)
            ),
            format!("{MANIFEST_HEADER}\nversion 0.1.0\ncommit c\nsha256 {hash} ..\n"),
            format!("{MANIFEST_HEADER}\nversion 0.1.0\ncommit c\nsha256 {hash} a\\b\n"),
            format!("{MANIFEST_HEADER}\nversion 0.1.0\ncommit c\nsha256 {hash} bad\u{1b}[2Jname\n"),
            format!("version 0.1.0\ncommit c\nsha256 {hash} hush\n"),
            format!("{MANIFEST_HEADER}\ncommit c\nsha256 {hash} hush\n"),
            format!("{MANIFEST_HEADER}\nversion 0.1.0\ncommit c\nsha256 abc hush\n"),
            format!("{MANIFEST_HEADER}\nversion 0.1.0\ncommit c\nsha256 {hash} ../hush\n"),
            format!("{MANIFEST_HEADER}\nversion 0.1.0\ncommit c\nSomething\n"),
        ] {
            assert!(Manifest::parse(&bad).is_err(), "{bad}");
        }
    }
}
