//! COMPRESS (RFC 4978): `COMPRESS DEFLATE` after login turns on the connection driver's
//! raw-deflate layer both ways once the tagged OK is out ([`Need::Compress`]); a second
//! one is refused with `NO [COMPRESSIONACTIVE]`, another mechanism with `BAD`.

use crate::parse::Command;
use crate::session::{Need, Reply, Session};

impl Session {
    /// COMPRESS mechanism.
    pub(crate) fn compress(&mut self, c: &Command) -> Result<Option<Need>, Reply> {
        let [arg] = c.args.as_slice() else {
            return Err(Reply::Bad("COMPRESS needs one mechanism".into()));
        };
        if arg.keyword().is_none_or(|k| k != "DEFLATE") {
            return Err(Reply::Bad("Unknown compression mechanism".into()));
        }
        if self.compressed {
            return Err(Reply::No("[COMPRESSIONACTIVE] DEFLATE is already active".into()));
        }
        self.ok(&c.tag, "DEFLATE active");
        self.compressed = true;
        Ok(Some(Need::Compress))
    }
}
