//! Tests of password hashing and verification: round trips, known vectors made with glibc's
//! crypt(3), scheme prefixes, and refusal of malformed or too costly hashes.

use super::*;

// Made with glibc crypt(3) (Python's `crypt.crypt("alice-pw", SALT)`) and `openssl passwd -6`.
const SHA512: &str =
    "$6$saltsalt12345678$B2H0OfJEKW5WpdBlCB7hguFgTflF8hhOpf8Ed7/0zhqqyKreCfrnAt9J8V9s.aFGezh.OLL2yMJsIN14euziP1";
const SHA512_ROUNDS: &str =
    "$6$rounds=6000$roundsalt$soA8fxCTz9R8aE0woSDYBPe2cJf9eRH206IUNiALBAPmW5xOxwMuL5yzG9hEbRqYX.kDvG3QVyQ8SrQ/qB8ow.";
const SHA512_OPENSSL: &str =
    "$6$xyz$sg4xwvLqjzQTI4jUNx5/0cw4tum29vHph3AKGZIbxnW4wa/v1zYl3zQ.dMoB2G6c.Z.enGnV4sNHumfU7SjqW.";
const SHA256: &str = "$5$saltsalt$Fcbm1yZQ5MgRVBHzbBx8U9XeSGinwprr6Kk3R41S4xB";
const YESCRYPT: &str = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$/A9K.yUcJiCjuz5OISyBZ7AaviFItQa/Pudz8py/Xj9";
const BCRYPT: &str = "$2b$05$abcdefghijklmnopqrstuujEI7PSP.y28xMPOv5lBoTSzRZgCP7le";
const MD5: &str = "$1$abcdefgh$/rjHnY0UaDSC5WvrpEXr21";

#[test]
fn argon2id_round_trip() {
    let h = hash_argon2id(b"alice-pw").unwrap();
    assert!(h.starts_with("$argon2id$v=19$"), "{h}");
    assert_eq!(verify(b"alice-pw", &h), Ok(true));
    assert_eq!(verify(b"alice-pw ", &h), Ok(false));
    assert_eq!(verify(b"", &h), Ok(false));
    // A new salt each time.
    assert_ne!(h, hash_argon2id(b"alice-pw").unwrap());
    assert_eq!(verify(b"alice-pw", &format!("{{ARGON2ID}}{h}")), Ok(true));
}

#[test]
fn argon2i_and_argon2d_verify() {
    use argon2::password_hash::CustomizedPasswordHasher;
    let salt = [7u8; 16];
    for alg in ["argon2i", "argon2d"] {
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let h = argon2::Argon2::default()
            .hash_password_customized(b"alice-pw", &salt, Some(alg), None, params)
            .unwrap()
            .to_string();
        assert!(h.starts_with(&format!("${alg}$")), "{h}");
        assert_eq!(verify(b"alice-pw", &h), Ok(true));
        assert_eq!(verify(b"bob-pw", &h), Ok(false));
    }
}

#[test]
fn crypt_vectors() {
    for h in [SHA512, SHA512_ROUNDS, SHA256, YESCRYPT, BCRYPT] {
        assert_eq!(verify(b"alice-pw", h), Ok(true), "{h}");
        assert_eq!(verify(b"alice-pX", h), Ok(false), "{h}");
    }
    assert_eq!(verify(b"alice-pw", SHA512_OPENSSL), Ok(true));
}

#[test]
fn dovecot_prefixes() {
    assert_eq!(verify(b"alice-pw", &format!("{{SHA512-CRYPT}}{SHA512}")), Ok(true));
    assert_eq!(verify(b"alice-pw", &format!("{{sha256-crypt}}{SHA256}")), Ok(true));
    assert_eq!(verify(b"alice-pw", &format!("{{CRYPT}}{YESCRYPT}")), Ok(true));
    assert_eq!(verify(b"alice-pw", &format!("{{BLF-CRYPT}}{BCRYPT}")), Ok(true));
    // The prefix must match the hash.
    assert!(matches!(
        verify(b"alice-pw", &format!("{{SHA256-CRYPT}}{SHA512}")),
        Err(PasswordError::Malformed { .. })
    ));
    assert!(matches!(
        verify(b"alice-pw", "{PLAIN}alice-pw"),
        Err(PasswordError::Unsupported(_))
    ));
    assert!(matches!(
        verify(b"alice-pw", "{SHA512-CRYPT"),
        Err(PasswordError::Malformed { .. })
    ));
}

#[test]
fn unsupported_schemes() {
    assert!(matches!(verify(b"alice-pw", MD5), Err(PasswordError::Unsupported(_))));
    assert!(matches!(
        verify(b"alice-pw", "abJnggxhB/yWI"),
        Err(PasswordError::Unsupported(_))
    ));
    assert!(matches!(
        verify(b"alice-pw", "$7$xyz$abc"),
        Err(PasswordError::Unsupported(_))
    ));
    assert!(matches!(verify(b"alice-pw", ""), Err(PasswordError::Malformed { .. })));
}

#[test]
fn malformed_hashes_are_errors() {
    for h in [
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$",
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
        "$argon2id$v=19$m=x,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
        "$6$",
        "$6$salt",
        "$6$rounds=abc$salt$hash",
        "$5$salt$!!!",
        "$y$",
        "$y$j9T$",
        "$y$~~~$salt$hash",
        "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$",
        "$2b$",
        "$2b$xx$abcdefghijklmnopqrstuujEI7PSP.y28xMPOv5lBoTSzRZgCP7le",
        "$2b$05$short",
    ] {
        match verify(b"alice-pw", h) {
            Err(PasswordError::Malformed { .. }) => {}
            other => panic!("{h}: {other:?}"),
        }
    }
}

#[test]
fn costly_hashes_are_refused_before_work() {
    let big_m = "$argon2id$v=19$m=4294967295,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
    assert!(
        matches!(verify(b"x", big_m), Err(PasswordError::TooCostly { .. })),
        "{:?}",
        verify(b"x", big_m)
    );
    let big_t = "$argon2id$v=19$m=1024,t=100000,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
    assert!(matches!(verify(b"x", big_t), Err(PasswordError::TooCostly { .. })));
    let rounds = "$6$rounds=999999999$salt$B2H0OfJEKW5WpdBlCB7hguFgTflF8hhOpf8Ed7/0zhqqyKreCfrnAt9J8V9s.aFGezh.OLL2yMJsIN14euziP1";
    assert!(matches!(verify(b"x", rounds), Err(PasswordError::TooCostly { .. })));
    // N = 2^40 (`b` encodes 39 + 1): anything above 1 GiB is refused.
    let big_n = "$y$jbT$F5Jx5fExrKuPp53xLKQ..1$/A9K.yUcJiCjuz5OISyBZ7AaviFItQa/Pudz8py/Xj9";
    assert!(
        matches!(verify(b"x", big_n), Err(PasswordError::TooCostly { .. })),
        "{:?}",
        verify(b"x", big_n)
    );
    let bcrypt31 = "$2b$31$abcdefghijklmnopqrstuujEI7PSP.y28xMPOv5lBoTSzRZgCP7le";
    assert!(matches!(verify(b"x", bcrypt31), Err(PasswordError::TooCostly { .. })));
}

#[test]
fn yescrypt_params_decode_like_the_crate() {
    let p = yescrypt_params(b"j9T").unwrap();
    assert_eq!((p.n_log2, p.r, p.p, p.t), (12, 32, 1, 0));
    assert_eq!(yescrypt_params(b""), None);
    assert_eq!(yescrypt_params(b"j"), None);
    assert_eq!(yescrypt_params(b"zzzzzzzzzzzz"), None);
}

proptest::proptest! {
    #[test]
    fn no_panic_on_arbitrary_hashes(prefix in proptest::sample::select(vec!["", "$argon2id$", "$6$", "$5$", "$y$", "$2b$", "{CRYPT}$", "$6$rounds="]), rest in "[ -~]{0,90}") {
        let stored = format!("{prefix}{rest}");
        // Tiny limits keep the rare random hash that parses cheap to compute.
        let tiny = Limits { memory_bytes: 1 << 20, argon2_passes: 2, argon2_lanes: 1, sha_crypt_rounds: 5000, yescrypt_time: 0, bcrypt_cost: 4 };
        let _ = std::hint::black_box(verify_with(b"pw", &stored, &tiny));
    }
}
