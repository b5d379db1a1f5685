//! OBJECTID (RFC 8474): the ids of mailboxes and messages.
//!
//! - MAILBOXID is `F` and the mailbox GUID of the folder's `dovecot-uidlist` header (its
//!   `G` field, made when the list is first written from the time and process id, as
//!   Dovecot makes it): it lives in the folder's directory, so it survives RENAME, and a
//!   folder deleted and created again gets a new one. A GUID that is not 1 to 64 letters
//!   and digits (a list written by another program) is replaced by `F` and a hash of it and
//!   the folder's UIDVALIDITY, which is as stable.
//! - EMAILID is `M` and the message's GUID in the index (32 hex digits): the same in every
//!   folder the message is copied or moved to.
//! - THREADID is NIL: threads are not tracked across a mailbox (RFC 8474 §5.2 allows NIL),
//!   and `SEARCH THREADID` matches nothing.
use postern_mailbox::Folder;
use postern_mailbox::index::{guid_hex, guid_of};

/// The MAILBOXID of a folder.
pub fn mailbox_id(folder: &Folder) -> String {
    let g = folder.mailbox_guid();
    if (1..=64).contains(&g.len()) && g.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("F{g}")
    } else {
        format!("F{}", guid_hex(guid_of(&format!("{g}/V{}", folder.uid_validity()))))
    }
}

/// The EMAILID of a message by its GUID.
pub fn email_id(guid: u128) -> String {
    format!("M{}", guid_hex(guid))
}

/// The GUID an EMAILID names, if it is one this server gives.
pub fn parse_email_id(id: &str) -> Option<u128> {
    let hex = id.strip_prefix('M')?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_ids_round_trip_and_strangers_are_none() {
        let g = 0x3085f01b7f11094c501100008c4a11c1u128;
        assert_eq!(email_id(g), "M3085f01b7f11094c501100008c4a11c1");
        assert_eq!(parse_email_id(&email_id(g)), Some(g));
        assert_eq!(parse_email_id("3085f01b7f11094c501100008c4a11c1"), None);
        assert_eq!(parse_email_id("Mxyz"), None);
        assert_eq!(parse_email_id("M+085f01b7f11094c501100008c4a11c1"), None);
    }
}
