//! QUOTA (RFC 9208) with the one resource Postern keeps, STORAGE (QUOTA=RES-STORAGE): the
//! quota `etc/users` gives an account (bytes, all folders counted, as local delivery and
//! APPEND/COPY count it: [`postern_mailbox::usage`]) under one quota root named `""`,
//! which every folder of the user belongs to. Values are in units of 1024 bytes: the usage
//! rounded up, the limit rounded down, so a client never sees room that is not there.
//! An account without a quota has no quota root: `GETQUOTAROOT` names none and
//! `GETQUOTA ""` is `NO [NONEXISTENT]`. `SETQUOTA` is parsed and refused with
//! `NO [NOPERM]`: limits are the administrator's (`postern user quota`). STATUS
//! `DELETED-STORAGE` ([`deleted_storage`]) is what an EXPUNGE of the folder would free.

use crate::parse::{Arg, Command};
use crate::reply::astring;
use crate::session::{Reply, Session};
use postern_mailbox::{Folder, Store};

/// The name of the user's one quota root.
pub const ROOT: &str = "";

/// Bytes in units of 1024, rounded up.
fn kib_up(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// STATUS `DELETED-STORAGE` (RFC 9208 §4.2): the sizes of the folder's `\Deleted`
/// messages, in units of 1024 bytes rounded up.
pub fn deleted_storage(folder: &Folder) -> u64 {
    kib_up(
        folder
            .messages()
            .iter()
            .filter(|m| m.flags.deleted())
            .map(|m| m.size)
            .sum(),
    )
}

impl Session {
    /// GETQUOTA, GETQUOTAROOT and SETQUOTA.
    pub(crate) fn quota_command(&mut self, c: &Command) -> Result<(), Reply> {
        match c.name.as_str() {
            "GETQUOTAROOT" => {
                let [name] = c.args.as_slice() else {
                    return Err(Reply::Bad("GETQUOTAROOT needs one mailbox name".into()));
                };
                let name = Store::canonical(&name.text().ok_or(Reply::Bad("Invalid mailbox name".into()))?);
                let path = self.store()?.folder_path(&name)?;
                if !path.join("cur").is_dir() {
                    return Err(Reply::No("[NONEXISTENT] No such mailbox".into()));
                }
                match self.quota_line()? {
                    Some(line) => {
                        self.line(&format!("* QUOTAROOT {} \"\"", astring(&name)));
                        self.line(&line);
                    }
                    None => self.line(&format!("* QUOTAROOT {}", astring(&name))),
                }
                self.ok(&c.tag, "GETQUOTAROOT completed");
            }
            "GETQUOTA" => {
                let [root] = c.args.as_slice() else {
                    return Err(Reply::Bad("GETQUOTA needs one quota root".into()));
                };
                let root = root.text().ok_or(Reply::Bad("Invalid quota root".into()))?;
                let line = self.quota_line()?.filter(|_| root == ROOT);
                let Some(line) = line else {
                    return Err(Reply::No("[NONEXISTENT] No such quota root".into()));
                };
                self.line(&line);
                self.ok(&c.tag, "GETQUOTA completed");
            }
            _ => {
                // SETQUOTA root (resource limit ...): well-formed, then refused
                let (Some(root), Some(Arg::List(limits)), None) = (c.args.first(), c.args.get(1), c.args.get(2)) else {
                    return Err(Reply::Bad("SETQUOTA needs a quota root and a list of limits".into()));
                };
                let pairs_ok = limits.len() % 2 == 0
                    && limits.chunks(2).all(|p| {
                        p[0].keyword()
                            .is_some_and(|k| k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                            && p[1].text().is_some_and(|n| {
                                !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit())
                            })
                    });
                if root.text().is_none() || !pairs_ok {
                    return Err(Reply::Bad("Invalid SETQUOTA arguments".into()));
                }
                tracing::info!("SETQUOTA refused, {}", self.who());
                return Err(Reply::No(
                    "[NOPERM] Quotas are set by the administrator (postern user quota)".into(),
                ));
            }
        }
        Ok(())
    }

    /// `* QUOTA "" (STORAGE used limit)` for the user's quota, `None` without one.
    fn quota_line(&self) -> Result<Option<String>, Reply> {
        let store = self.store()?;
        let Some(limit) = store.quota() else {
            return Ok(None);
        };
        let used = postern_mailbox::usage(store.root()).map_err(|e| {
            tracing::warn!("quota: {}: {e}", store.root().display());
            Reply::No("[SERVERBUG] Internal error".into())
        })?;
        Ok(Some(format!(
            "* QUOTA \"\" (STORAGE {} {})",
            kib_up(used),
            limit / 1024
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn storage_units_round_usage_up_and_limits_down() {
        assert_eq!(super::kib_up(0), 0);
        assert_eq!(super::kib_up(1), 1);
        assert_eq!(super::kib_up(1024), 1);
        assert_eq!(super::kib_up(1025), 2);
    }
}
