//! # postern-password — password hashes: making them (argon2id) and checking a password
//! against a stored one
//!
//! Its own crate so that only auth (which verifies) and `postern user` (which hashes)
//! link the four hash libraries; every other daemon links `postern-lib` without them.
//!
//!
//! [`hash_argon2id`] is what Postern writes: a PHC string `$argon2id$v=19$m=…,t=…,p=…$SALT$HASH`
//! with the argon2 crate's default (OWASP) parameters and a 16-byte salt from the OS.
//! [`verify`] also accepts the hashes an administrator imports from elsewhere:
//!
//! | form | scheme |
//! | --- | --- |
//! | `$argon2id$…`, `$argon2i$…`, `$argon2d$…` | Argon2 (PHC string) |
//! | `$6$…`, `$5$…` (optionally `rounds=N$`) | sha512-crypt, sha256-crypt |
//! | `$y$…` | yescrypt (Debian 11+ `/etc/shadow`) |
//! | `$2b$…`, `$2y$…`, `$2a$…` | bcrypt |
//!
//! each optionally behind a Dovecot-style scheme prefix (`{ARGON2ID}`, `{ARGON2I}`,
//! `{SHA512-CRYPT}`, `{SHA256-CRYPT}`, `{BLF-CRYPT}`, `{CRYPT}`), which is checked against
//! the hash and stripped. Anything else (`$1$` md5-crypt, DES crypt, `{PLAIN}`, `{SSHA}`, …)
//! is [`PasswordError::Unsupported`]: Postern never compares plain or weakly hashed
//! passwords.
//!
//! Security stance:
//! - No input panics: a malformed hash is [`PasswordError::Malformed`]. The hash libraries are
//!   additionally run under `catch_unwind`, so that a bug in one of them turns into an error
//!   rather than taking down the auth daemon.
//! - A stored hash chooses its own cost, so a hostile or mistyped one could ask for terabytes
//!   of memory or hours of CPU. Parameters above [`LIMITS`] are refused
//!   ([`PasswordError::TooCostly`]) before any work is done.
//! - Comparison of the computed hash is constant-time (done by the hash crates).
//! - Callers hold passwords in [`Zeroizing`] buffers, which are wiped when dropped; argon2's
//!   own working memory is wiped too (its `zeroize` feature).
#![forbid(unsafe_code)]

use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use zeroize::Zeroizing;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordError {
    /// Hashing failed: the OS random source failed, or the hash library refused.
    #[error("cannot hash password: {0}")]
    Hash(String),
    /// The stored hash is not a well-formed hash of its scheme.
    #[error("malformed {scheme} password hash: {reason}")]
    Malformed {
        /// The scheme the hash claims to be (`argon2`, `sha-crypt`, …), or `unknown`.
        scheme: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme is recognised but not accepted (md5-crypt, DES, plain text, …).
    #[error("unsupported password scheme {0}")]
    Unsupported(String),
    /// The hash asks for more memory or time than [`LIMITS`] allow.
    #[error("{scheme} password hash is too costly to verify: {reason}")]
    TooCostly {
        /// The scheme.
        scheme: &'static str,
        /// Which parameter is over the limit.
        reason: String,
    },
}

/// The most a stored hash may ask for; beyond this [`verify`] refuses to work on it.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest memory a hash may use (argon2 `m`, yescrypt `128·r·(N+p)`), in bytes.
    pub memory_bytes: u64,
    /// Largest argon2 `t` (passes over memory).
    pub argon2_passes: u32,
    /// Largest argon2 `p` (lanes).
    pub argon2_lanes: u32,
    /// Largest sha-crypt `rounds=`.
    pub sha_crypt_rounds: u64,
    /// Largest yescrypt `t`.
    pub yescrypt_time: u32,
    /// Largest bcrypt cost (log2 of the rounds).
    pub bcrypt_cost: u32,
}

/// The limits [`verify`] applies: 1 GiB of memory, and CPU costs far above any default.
pub const LIMITS: Limits = Limits {
    memory_bytes: 1 << 30,
    argon2_passes: 64,
    argon2_lanes: 64,
    sha_crypt_rounds: 10_000_000,
    yescrypt_time: 16,
    bcrypt_cost: 16,
};

/// Hashes `password` with argon2id, default parameters and a random salt; returns the PHC
/// string.
pub fn hash_argon2id(password: &[u8]) -> Result<String, PasswordError> {
    let salt = password_hash::try_generate_salt().map_err(|e| PasswordError::Hash(format!("no random salt: {e}")))?;
    let argon = argon2::Argon2::default();
    guard("argon2", || {
        argon
            .hash_password_with_salt(password, &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
}

/// Checks `password` against `stored` (any of the forms in the module docs).
/// `Ok(false)` means the password is wrong; an error means the stored hash is unusable.
pub fn verify(password: &[u8], stored: &str) -> Result<bool, PasswordError> {
    verify_with(password, stored, &LIMITS)
}

/// [`verify`] with other cost limits.
pub fn verify_with(password: &[u8], stored: &str, limits: &Limits) -> Result<bool, PasswordError> {
    let hash = strip_scheme(stored.trim())?;
    match scheme_of(hash)? {
        Scheme::Argon2 => verify_argon2(password, hash, limits),
        Scheme::ShaCrypt => verify_sha_crypt(password, hash, limits),
        Scheme::Yescrypt => verify_yescrypt(password, hash, limits),
        Scheme::Bcrypt => verify_bcrypt(password, hash, limits),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Argon2,
    ShaCrypt,
    Yescrypt,
    Bcrypt,
}

/// Which scheme a bare (prefix-stripped) hash is.
fn scheme_of(hash: &str) -> Result<Scheme, PasswordError> {
    let id = match hash.strip_prefix('$').and_then(|h| h.split_once('$')) {
        Some((id, _)) => id,
        None if hash.is_empty() => return Err(malformed("unknown", "empty")),
        None => return Err(PasswordError::Unsupported("DES crypt or unrecognised".into())),
    };
    match id {
        "argon2id" | "argon2i" | "argon2d" => Ok(Scheme::Argon2),
        "5" | "6" => Ok(Scheme::ShaCrypt),
        "y" => Ok(Scheme::Yescrypt),
        "2a" | "2b" | "2y" => Ok(Scheme::Bcrypt),
        "1" => Err(PasswordError::Unsupported("md5-crypt ($1$)".into())),
        other => Err(PasswordError::Unsupported(format!(
            "${}$",
            other.chars().take(16).collect::<String>()
        ))),
    }
}

/// Strips a Dovecot `{SCHEME}` prefix, checking that the hash is of that scheme.
fn strip_scheme(stored: &str) -> Result<&str, PasswordError> {
    let Some(rest) = stored.strip_prefix('{') else {
        return Ok(stored);
    };
    let Some((name, hash)) = rest.split_once('}') else {
        return Err(malformed("unknown", "'{' without a closing '}'"));
    };
    let want: &[&str] = match name.to_ascii_uppercase().as_str() {
        "ARGON2ID" => &["$argon2id$"],
        "ARGON2I" => &["$argon2i$"],
        "SHA512-CRYPT" => &["$6$"],
        "SHA256-CRYPT" => &["$5$"],
        "BLF-CRYPT" => &["$2a$", "$2b$", "$2y$"],
        "CRYPT" => &["$"],
        _ => {
            return Err(PasswordError::Unsupported(format!(
                "{{{}}}",
                name.chars().take(32).collect::<String>()
            )));
        }
    };
    if want.iter().any(|p| hash.starts_with(p)) {
        Ok(hash)
    } else {
        Err(malformed(
            "unknown",
            &format!("a {{{name}}} hash must start with {}", want.join(" or ")),
        ))
    }
}

fn malformed(scheme: &'static str, reason: &str) -> PasswordError {
    PasswordError::Malformed {
        scheme,
        reason: reason.to_string(),
    }
}

fn too_costly(scheme: &'static str, reason: String) -> PasswordError {
    PasswordError::TooCostly { scheme, reason }
}

/// Maps the result of a `password_hash` verifier: a wrong password is `Ok(false)`.
fn outcome(scheme: &'static str, r: password_hash::Result<()>) -> Result<bool, PasswordError> {
    match r {
        Ok(()) => Ok(true),
        Err(password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(malformed(scheme, &e.to_string())),
    }
}

/// Runs a hash library call; a panic inside it becomes [`PasswordError::Malformed`].
fn guard<T>(scheme: &'static str, f: impl FnOnce() -> Result<T, PasswordError>) -> Result<T, PasswordError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(malformed(scheme, "the hash library failed on it")))
}

fn verify_argon2(password: &[u8], hash: &str, limits: &Limits) -> Result<bool, PasswordError> {
    const S: &str = "argon2";
    let parsed = argon2::PasswordHash::new(hash).map_err(|e| malformed(S, &e.to_string()))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(malformed(S, "salt or hash missing"));
    }
    let params = argon2::Params::try_from(&parsed).map_err(|e| malformed(S, &e.to_string()))?;
    if u64::from(params.m_cost()) * 1024 > limits.memory_bytes {
        return Err(too_costly(S, format!("m={} KiB", params.m_cost())));
    }
    if params.t_cost() > limits.argon2_passes {
        return Err(too_costly(S, format!("t={}", params.t_cost())));
    }
    if params.p_cost() > limits.argon2_lanes {
        return Err(too_costly(S, format!("p={}", params.p_cost())));
    }
    guard(S, || {
        outcome(S, argon2::Argon2::default().verify_password(password, &parsed))
    })
}

fn verify_sha_crypt(password: &[u8], hash: &str, limits: &Limits) -> Result<bool, PasswordError> {
    const S: &str = "sha-crypt";
    // `$6$rounds=N$salt$hash` or `$6$salt$hash`.
    let mut fields = hash.split('$').skip(2);
    if let Some(rounds) = fields.next().and_then(|f| f.strip_prefix("rounds=")) {
        let n: u64 = rounds.parse().map_err(|_| malformed(S, "rounds= is not a number"))?;
        if n > limits.sha_crypt_rounds {
            return Err(too_costly(S, format!("rounds={n}")));
        }
    }
    guard(S, || {
        outcome(S, sha_crypt::ShaCrypt::SHA512.verify_password(password, hash))
    })
}

fn verify_yescrypt(password: &[u8], hash: &str, limits: &Limits) -> Result<bool, PasswordError> {
    const S: &str = "yescrypt";
    let params = hash.split('$').nth(2).unwrap_or("");
    let p = yescrypt_params(params.as_bytes()).ok_or_else(|| malformed(S, "bad parameter field"))?;
    let memory = 128u128 * u128::from(p.r) * ((1u128 << p.n_log2) + u128::from(p.p));
    if memory > u128::from(limits.memory_bytes) {
        return Err(too_costly(S, format!("N=2^{} r={} p={}", p.n_log2, p.r, p.p)));
    }
    if p.t > limits.yescrypt_time {
        return Err(too_costly(S, format!("t={}", p.t)));
    }
    guard(S, || {
        outcome(S, yescrypt::Yescrypt::default().verify_password(password, hash))
    })
}

fn verify_bcrypt(password: &[u8], hash: &str, limits: &Limits) -> Result<bool, PasswordError> {
    const S: &str = "bcrypt";
    let cost: u32 = hash
        .get(4..6)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed(S, "cost is not two digits"))?;
    if cost > limits.bcrypt_cost {
        return Err(too_costly(S, format!("cost {cost}")));
    }
    guard(S, || {
        bcrypt::verify(password, hash).map_err(|e| malformed(S, &e.to_string()))
    })
}

/// yescrypt parameters as encoded after `$y$`.
#[derive(Debug, PartialEq, Eq)]
struct YescryptParams {
    n_log2: u32,
    r: u32,
    p: u32,
    t: u32,
}

/// Decodes the yescrypt parameter field the way the yescrypt crate does, but with checked
/// arithmetic, so that values the crate would overflow on are refused here first.
fn yescrypt_params(s: &[u8]) -> Option<YescryptParams> {
    let (_flavor, pos) = decode64_u32(s, 0, 0)?;
    let (n_log2, pos) = decode64_u32(s, pos, 1)?;
    let (r, mut pos) = decode64_u32(s, pos, 1)?;
    let (mut p, mut t, mut g) = (1, 0, 0);
    if pos < s.len() {
        let (have, next) = decode64_u32(s, pos, 1)?;
        pos = next;
        if have & 1 != 0 {
            (p, pos) = decode64_u32(s, pos, 2)?;
        }
        if have & 2 != 0 {
            (t, pos) = decode64_u32(s, pos, 1)?;
        }
        if have & 4 != 0 {
            (g, pos) = decode64_u32(s, pos, 1)?;
        }
        if have & 8 != 0 {
            decode64_u32(s, pos, 1)?;
        }
    }
    (n_log2 <= 63 && g == 0).then_some(YescryptParams { n_log2, r, p, t })
}

/// The variable-length integer encoding of yescrypt parameters.
fn decode64_u32(src: &[u8], mut pos: usize, min: u32) -> Option<(u32, usize)> {
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let atoi = |c: u8| ITOA64.iter().position(|&x| x == c).and_then(|p| u32::try_from(p).ok());
    let n = atoi(*src.get(pos)?)?;
    pos += 1;
    let (mut start, mut end, mut chars, mut bits) = (0u32, 47u32, 1u32, 0u32);
    let mut dst = min;
    while n > end {
        dst = dst.checked_add((end + 1 - start).checked_shl(bits)?)?;
        start = end + 1;
        end = start + 62u32.checked_sub(end)? / 2;
        chars += 1;
        bits += 6;
    }
    dst = dst.checked_add((n - start).checked_shl(bits)?)?;
    while chars > 1 {
        chars -= 1;
        if bits < 6 {
            return None;
        }
        let c = atoi(*src.get(pos)?)?;
        pos += 1;
        bits -= 6;
        dst = dst.checked_add(c.checked_shl(bits)?)?;
    }
    Some((dst, pos))
}

#[cfg(test)]
mod tests;
