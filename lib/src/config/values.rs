//! Typed values of the settings that take one word out of a fixed set
//! (`smtpd_tls_security_level = "may"`): a small enum each, read case-insensitively, written
//! back in lower case, and refused at load time with the allowed words named — so
//! `postern check` and a reload catch a typo before a daemon starts with it.

use super::registry::SettingType;
use std::fmt;
use std::str::FromStr;

/// Declares a word-valued setting type: the enum, `FromStr`, `Display`, serde and its
/// [`SettingType`] (`one of: a, b, c`). `Variant = "word" | "alias"`.
macro_rules! word_enum {
    ($(#[doc = $doc:literal])* $name:ident {
        $($(#[doc = $vdoc:literal])* $var:ident = $word:literal $(| $alias:literal)*,)+
    }) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[doc = $vdoc])* $var,)+
        }

        impl $name {
            /// The allowed words.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The word of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $word,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                let t = text.trim().to_ascii_lowercase();
                $(if t == $word $(|| t == $alias)* {
                    return Ok($name::$var);
                })+
                Err(format!("{text:?} is not one of: {}", $name::WORDS.join(", ")))
            }
        }

        /// Compares with a word as written in `main.toml` (`level == "may"`).
        impl PartialEq<&str> for $name {
            fn eq(&self, word: &&str) -> bool {
                self.as_str() == *word
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl SettingType for $name {
            fn kind() -> String {
                format!("one of: {}", $name::WORDS.join(", "))
            }
        }
    };
}

word_enum! {
    /// `smtpd_tls_security_level`: what smtpd offers or demands of TLS.
    SmtpdTlsLevel {
        /// No STARTTLS.
        None = "none",
        /// STARTTLS offered.
        May = "may",
        /// TLS required before MAIL and AUTH.
        Encrypt = "encrypt",
    }
}

word_enum! {
    /// `smtp_tls_security_level`: the smtp client's TLS policy towards other servers
    /// (an empty value is `none`, as smtp has always read it).
    SmtpTlsLevel {
        /// Plain text.
        None = "none" | "",
        /// Opportunistic TLS.
        May = "may",
        /// TLS required, any certificate.
        Encrypt = "encrypt",
        /// TLS with a certificate from a trusted CA.
        Verify = "verify",
        /// TLS with a trusted certificate whose name matches.
        Secure = "secure",
    }
}

word_enum! {
    /// `milter_default_action`: what cleanup does when a milter fails.
    MilterAction {
        /// Go on as if the milter had accepted.
        Accept = "accept",
        /// Reject the message (5xx).
        Reject = "reject",
        /// Refuse it for now (4xx).
        Tempfail = "tempfail",
        /// Accept it into the hold queue.
        Quarantine = "quarantine",
    }
}

word_enum! {
    /// `mailbox_format`: how local stores a virtual user's mail.
    MailboxFormat {
        /// A Maildir (a directory).
        Maildir = "maildir",
        /// One mbox file.
        Mbox = "mbox",
    }
}

word_enum! {
    /// `queue_mirror_unreachable`: what cleanup answers when the active-standby peer cannot
    /// take a message's copy.
    MirrorUnreachable {
        /// 451 4.3.0: the client retries.
        Defer = "defer",
        /// 250: held by this node alone, logged as degraded.
        Degraded = "degraded",
    }
}

word_enum! {
    /// `smtpd_forbid_bare_newline`: what smtpd does with a bare LF in DATA.
    BareNewline {
        /// Treat it as CRLF.
        Normalize = "normalize",
        /// Refuse the message.
        Reject = "reject",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_typos_name_the_choices() {
        assert_eq!("MAY".parse::<SmtpdTlsLevel>(), Ok(SmtpdTlsLevel::May));
        assert_eq!("".parse::<SmtpTlsLevel>(), Ok(SmtpTlsLevel::None));
        assert_eq!(MilterAction::Quarantine.to_string(), "quarantine");
        assert_eq!(
            "mayy".parse::<SmtpTlsLevel>().unwrap_err(),
            "\"mayy\" is not one of: none, may, encrypt, verify, secure"
        );
    }
}
