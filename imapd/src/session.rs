//! One IMAP session, sans-I/O: bytes in ([`Session::input`]), bytes out
//! ([`Session::take_output`]), and a [`Need`] when the session must wait for the auth
//! daemon. Framing lives here — command lines bounded by `imapd_max_line_length`, literals
//! (`{n}` with a `+` continuation, `{n+}` LITERAL+ without) bounded by `imapd_max_literal`
//! and refused before they are read; before login both are held to a few KB
//! ([`PRELOGIN_MAX_LINE`], [`PRELOGIN_MAX_LITERAL`], as Dovecot's imap-login does), so an
//! unauthenticated client cannot make the server buffer more; after login APPEND's
//! literals over [`SPOOL_ABOVE`] go to the target folder's `tmp/` as they arrive
//! ([`crate::append_spool`]), and every other literal but the small ones
//! ([`SMALL_LITERAL`]) must fit the process's [`LiteralBudget`]
//! (`imapd_literal_memory_limit`, reserved when announced, given back when the command
//! has run or the session ends) or it is refused unread with `NO [UNAVAILABLE]` (`* BYE`
//! for LITERAL+) — and commands are dispatched to the files by family:
//! [`crate::cmd_mailbox`], [`crate::cmd_list`], [`crate::cmd_message`], [`crate::cmd_fetch`],
//! [`crate::cmd_search`]. `ENABLE IMAP4rev2` switches the session to RFC 9051's answers
//! (no RECENT, ESEARCH for SEARCH, a LIST line and `[CLOSED]` at SELECT). `ENABLE
//! CONDSTORE`, or any CONDSTORE-enabling command ([`Session::condstore_on`]), adds MODSEQ
//! to every FETCH response that carries FLAGS, solicited or not (RFC 7162 §3.1).
//!
//! The selected folder's state is shared by every session of the process that has it
//! selected ([`postern_mailbox::shared`]): a session takes it out while it runs
//! (every public entry point: [`Session::input`], [`Session::resume`], ...) and puts it
//! back afterwards. What a session keeps of its own is its view — the (UID, flags) its
//! client was told, by sequence number — and between commands, when that view equals the
//! folder's state, only a [`Mirror`] of it (generation, HIGHESTMODSEQ, last UID): the view
//! is rebuilt from the state, its MODSEQs and its expunge log when the session runs again,
//! so an idle session holds a few hundred bytes whatever the folder's size. After each
//! command (and while idling, at [`Session::poll`], which costs a comparison of
//! generations while nothing changed) what others changed is reported as untagged EXISTS /
//! EXPUNGE / FETCH. EXPUNGE is held back during FETCH, STORE and SEARCH (RFC 3501 §7.4.1),
//! so sequence numbers never shift under a client's feet.

use crate::literal_budget::{Held, LiteralBudget};
use crate::parse::{self, Arg, Command, SeqSet};
use postern_lib::line::LineBuffer;
use postern_mailbox::flags::Flags;
use postern_mailbox::shared::Handle;
use postern_mailbox::spool::Spool;
use postern_mailbox::{Folder, MailboxError, Message, Store};
use std::path::PathBuf;

/// Largest literal accepted before login: enough for LOGIN and AUTHENTICATE, nothing
/// for an unauthenticated client to fill memory with.
pub const PRELOGIN_MAX_LITERAL: u64 = 8 * 1024;
/// Longest command line before login (a SASL response line included).
pub const PRELOGIN_MAX_LINE: usize = 8 * 1024;

/// Literals up to this size, in a command of at most [`SMALL_COMMAND`] bytes so far, are
/// not counted against the process's [`LiteralBudget`] (all literals before login are
/// such).
pub const SMALL_LITERAL: u64 = PRELOGIN_MAX_LITERAL;
/// See [`SMALL_LITERAL`]: what such literals can make one connection hold.
pub const SMALL_COMMAND: u64 = 64 * 1024;

/// APPEND literals larger than this are written to the target folder's `tmp/` as they
/// arrive ([`Spool`]) instead of being held in memory, and are not counted against the
/// [`LiteralBudget`]: a session receiving one holds a read buffer, whatever its size.
pub const SPOOL_ABOVE: u64 = 64 * 1024;

/// Output gathered from pipelined commands before the rest wait for the client to read it
/// (the server's [`Session::busy`] back-pressure): a client that sends many commands and
/// never reads makes a session hold this plus one command's answer, not one answer per
/// command received.
pub const OUTPUT_PAUSE: usize = 256 * 1024;
/// [`OUTPUT_PAUSE`] before login: a client that pipelines CAPABILITY without reading the
/// answers makes a session gather this plus one answer at a time.
pub const PRELOGIN_OUTPUT_PAUSE: usize = 16 * 1024;

/// The time a session works through pipelined commands at a stretch before the rest wait
/// for their turn ([`Session::busy`], [`Session::resume`]), so that a client sending
/// many slow commands at once delays the process's other sessions by about this much.
pub const WORK_SLICE: std::time::Duration = std::time::Duration::from_millis(50);

/// Limits and facts a session needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `virtual_mailbox_base`.
    pub mail_base: PathBuf,
    /// Largest literal.
    pub max_literal: u64,
    /// Longest command line.
    pub max_line: usize,
    /// Host name for the greeting.
    pub hostname: String,
    /// Whether STARTTLS can be offered (a certificate is configured).
    pub starttls: bool,
}

/// What the session waits for from outside.
#[derive(Debug, PartialEq)]
pub enum Need {
    /// Verify a password with the auth daemon, then call [`Session::auth_done`].
    Verify {
        /// Login name.
        user: String,
        /// Password.
        password: String,
    },
    /// Start TLS now: everything after the output already taken is encrypted.
    StartTls,
    /// Start compression now (COMPRESS DEFLATE): everything after the output already
    /// taken, and all input after the command, is compressed.
    Compress,
}

/// The selected folder and what this session has told its client about it.
pub struct Selected {
    /// The folder's state, while the session runs (a [`Folder::placeholder`] between).
    pub folder: Folder,
    /// IMAP name.
    pub name: String,
    /// EXAMINE.
    pub read_only: bool,
    /// (uid, flags) per sequence number, as last reported (empty while `mirror` says).
    pub view: Vec<(u32, Flags)>,
    /// The saved search result `$` (RFC 5182), as UIDs ascending ([`crate::esearch`]).
    pub saved: Vec<u32>,
    /// The session's share of the state.
    pub(crate) handle: Handle,
    /// Between commands: the view equalled the state at this point.
    pub(crate) mirror: Option<Mirror>,
    /// The UID ranges (half-open) whose `\Recent` this session took.
    pub(crate) recent: Vec<(u32, u32)>,
    /// The folder's keywords as this session last told them (`* FLAGS`).
    pub(crate) keywords_told: Vec<String>,
    /// The folder's generation when a report with expunges left the view equal to it.
    pub(crate) reported: Option<u64>,
    /// Searches and sorts kept up to date (RFC 5267 CONTEXT, [`crate::context`]).
    pub(crate) contexts: Vec<crate::context::Context>,
}

impl Selected {
    /// A new selection of `folder` (taken from `handle`), its view all of the messages.
    pub(crate) fn new(folder: Folder, handle: Handle, name: String, read_only: bool) -> Selected {
        let view = folder.messages().iter().map(|m| (m.uid, m.flags)).collect();
        Selected {
            folder,
            name,
            read_only,
            view,
            saved: Vec::new(),
            handle,
            mirror: None,
            recent: Vec::new(),
            keywords_told: Vec::new(),
            reported: None,
            contexts: Vec::new(),
        }
    }

    /// `* FLAGS` and `* OK [PERMANENTFLAGS]` for the folder's keywords now, when they are
    /// not those the session last told (a keyword added by a STORE of this or another
    /// session, or another program): sent before any FETCH that uses them.
    pub(crate) fn flags_update(&mut self) -> Vec<String> {
        let now: Vec<String> = self
            .folder
            .keywords()
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        if now == self.keywords_told {
            return Vec::new();
        }
        self.keywords_told = now;
        flag_lines(&self.keywords_told).to_vec()
    }

    /// Takes the folder's messages still recent for this session (a read-write one, not
    /// after `ENABLE IMAP4rev2`).
    pub(crate) fn claim_recent(&mut self) {
        let (from, to) = self.folder.claim_recent();
        if from < to {
            self.recent.push((from, to));
        }
    }

    /// Flags as this session shows them: with `\Recent` when it is.
    pub(crate) fn shown(&self, uid: u32, flags: Flags) -> Flags {
        with_recent(&self.recent, uid, flags)
    }

    /// How many messages of the view are `\Recent` for this session (read-write), or
    /// recent for the next session to select (read-only).
    pub(crate) fn recent_count(&self) -> usize {
        if self.read_only {
            let from = self.folder.recent_from();
            return self.view.iter().filter(|v| v.0 >= from).count();
        }
        self.view.iter().filter(|v| recent_in(&self.recent, v.0)).count()
    }

    /// [`Selected::recent_count`] of a view that is `msgs` (the folder's messages), without
    /// the view: binary searches of the session's ranges.
    pub(crate) fn recent_among(&self, msgs: &[Message]) -> usize {
        let below = |uid: u32| msgs.partition_point(|m| m.uid < uid);
        if self.read_only {
            return msgs.len() - below(self.folder.recent_from());
        }
        self.recent
            .iter()
            .map(|&(a, b)| below(b).saturating_sub(below(a)))
            .sum()
    }
}

/// The `* FLAGS` and `* OK [PERMANENTFLAGS]` lines for a folder with `keywords`.
pub(crate) fn flag_lines(keywords: &[String]) -> [String; 2] {
    let mut kw: Vec<String> = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    kw.extend(keywords.iter().cloned());
    let flags = format!("* FLAGS {}", crate::reply::flag_list(&kw));
    kw.push("\\*".into());
    [
        flags,
        format!("* OK [PERMANENTFLAGS {}] Flags permitted", crate::reply::flag_list(&kw)),
    ]
}

fn recent_in(ranges: &[(u32, u32)], uid: u32) -> bool {
    ranges.iter().any(|&(a, b)| (a..b).contains(&uid))
}

pub(crate) fn with_recent(ranges: &[(u32, u32)], uid: u32, flags: Flags) -> Flags {
    if recent_in(ranges, uid) {
        Flags {
            system: flags.system | postern_mailbox::flags::RECENT,
            ..flags
        }
    } else {
        flags
    }
}

impl Drop for Selected {
    fn drop(&mut self) {
        let f = std::mem::replace(&mut self.folder, Folder::placeholder());
        if !f.is_placeholder() {
            self.handle.put(f);
        }
    }
}

/// What a session's view was when it was put away: equal to the folder state of this
/// generation, HIGHESTMODSEQ and last UID.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mirror {
    pub(crate) generation: u64,
    pub(crate) modseq: u64,
    pub(crate) last_uid: u32,
}

/// Flags no message has: a view entry whose flags the client must be told again.
const UNTOLD: Flags = Flags {
    system: 0x80,
    keywords: 0,
};

/// The view a [`Mirror`] stands for, rebuilt from the folder state: the messages up to its
/// last UID, those expunged since as they were (to be reported), those changed since with
/// flags to be reported.
fn rebuild_view(folder: &Folder, m: Mirror) -> Vec<(u32, Flags)> {
    if folder.generation() == m.generation {
        return folder.messages().iter().map(|x| (x.uid, x.flags)).collect();
    }
    let mut v: Vec<(u32, Flags)> = folder
        .messages()
        .iter()
        .take_while(|x| x.uid <= m.last_uid)
        .map(|x| (x.uid, if x.modseq > m.modseq { UNTOLD } else { x.flags }))
        .collect();
    match folder.expunged_since(m.modseq) {
        Some(gone) => {
            let before = v.len();
            v.extend(gone.iter().filter(|(_, u)| *u <= m.last_uid).map(|&(_, u)| (u, UNTOLD)));
            if v.len() != before {
                v.sort_unstable_by_key(|x| x.0);
                v.dedup_by_key(|x| x.0);
            }
        }
        None => tracing::warn!(
            "{}: a session's view is older than the expunges remembered",
            folder.path().display()
        ),
    }
    v
}

enum Mode {
    Normal,
    Idle(String),
    AuthPlain(String),
    Waiting(String),
}

/// A login the auth daemon accepted: the account, and its quota in bytes (`etc/users`),
/// which APPEND, COPY and MOVE enforce.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// The canonical account name.
    pub name: String,
    /// The quota, when the account has one.
    pub quota: Option<u64>,
}

impl From<&str> for Account {
    fn from(name: &str) -> Account {
        Account {
            name: name.to_string(),
            quota: None,
        }
    }
}

/// Why a login did not succeed.
#[derive(Debug)]
pub enum LoginFailure {
    /// The auth daemon said no: wrong password or unknown user.
    Refused(String),
    /// The password could not be checked (auth unreachable, or its temporary failure).
    Unavailable(String),
}

/// One session.
pub struct Session {
    pub(crate) settings: Settings,
    pub(crate) secure: bool,
    tls: bool,
    /// COMPRESS DEFLATE is active ([`crate::cmd_compress`]).
    pub(crate) compressed: bool,
    pub(crate) store: Option<Store>,
    pub(crate) user: Option<String>,
    pub(crate) sel: Option<Selected>,
    pub(crate) out: Vec<u8>,
    closed: bool,
    mode: Mode,
    /// Input given to [`Session::input`] (tests, fuzzing) and not yet used; on the
    /// connection driver the session reads the driver's buffer instead ([`Session::run`]).
    pub(crate) inbuf: LineBuffer,
    pub(crate) cmd: Vec<u8>,
    pub(crate) literal_need: usize,
    /// The literal bytes of all sessions of the process, and this session's part of them
    /// (the literals of the command being received).
    literal_budget: LiteralBudget,
    literal_held: Held,
    pub(crate) pending_fetch: Option<crate::cmd_fetch::FetchJob>,
    /// The large APPEND literals of the command being received, written to the target
    /// folder's `tmp/` as they arrive ([`SPOOL_ABOVE`]); the command's text holds a
    /// placeholder for each ([`Session::spool_placeholder`]). `Err` is a literal that
    /// was read and thrown away, and why the APPEND fails. Dropped (files removed) when
    /// the command has run, is refused, or the session ends.
    pub(crate) spooled: Vec<Result<Spool, Reply>>,
    /// The literal being received goes to the last of `spooled`.
    pub(crate) spooling: bool,
    /// Makes the placeholders of this session unguessable to its client.
    pub(crate) spool_nonce: u64,
    /// A SEARCH that used up its [`WORK_SLICE`], to go on at [`Session::resume`].
    pub(crate) pending_search: Option<crate::cmd_search::SearchJob>,
    /// A STORE over more than [`crate::cmd_message::STORE_CHUNK`] messages, to go on at
    /// [`Session::resume`].
    pub(crate) pending_store: Option<crate::cmd_message::StoreJob>,
    /// Commands were left unrun because the output of those before them reached
    /// [`OUTPUT_PAUSE`]: [`Session::resume`] goes on once the client has read it.
    held_back: bool,
    /// `ENABLE IMAP4rev2` was given: RFC 9051's responses from then on.
    pub(crate) rev2: bool,
    /// CONDSTORE is on (RFC 7162 §3.1: `ENABLE CONDSTORE` or a CONDSTORE-enabling
    /// command): FETCH responses with FLAGS carry MODSEQ, SELECT says HIGHESTMODSEQ.
    pub(crate) condstore: bool,
    /// `ENABLE QRESYNC` was given (RFC 7162 §3.2): expunges are told as `* VANISHED`.
    pub(crate) qresync: bool,
    /// `ENABLE UIDONLY` was given (RFC 9586, [`crate::uidonly`]).
    pub(crate) uidonly: bool,
    /// NOTIFY SET's events and what was last told (RFC 5465, [`crate::notify`]).
    pub(crate) notify: Option<Box<crate::notify::Notify>>,
    /// The client's address, for log lines.
    pub(crate) peer: String,
    /// The transcript of a user in `imapd_transcript_users` ([`crate::transcript`]).
    transcript: crate::transcript::Transcript,
}

impl Session {
    /// A new session; `secure` when the client is on loopback, `tls` when the connection
    /// is TLS already (implicit TLS): cleartext passwords are accepted only then.
    pub fn new(settings: Settings, secure: bool, tls: bool) -> Session {
        let mut s = Session {
            settings,
            secure: secure || tls,
            tls,
            compressed: false,
            store: None,
            user: None,
            sel: None,
            out: Vec::new(),
            closed: false,
            mode: Mode::Normal,
            inbuf: own_input(),
            cmd: Vec::new(),
            literal_need: 0,
            literal_budget: LiteralBudget::new(u64::MAX),
            literal_held: Held::default(),
            pending_fetch: None,
            spooled: Vec::new(),
            spooling: false,
            spool_nonce: {
                use std::hash::{BuildHasher, Hasher};
                std::collections::hash_map::RandomState::new().build_hasher().finish()
            },
            pending_search: None,
            pending_store: None,
            held_back: false,
            rev2: false,
            condstore: false,
            qresync: false,
            uidonly: false,
            notify: None,
            peer: "unknown".into(),
            transcript: crate::transcript::Transcript::new(),
        };
        let caps = s.capabilities();
        let host = s.settings.hostname.clone();
        s.line(&format!("* OK [CAPABILITY {caps}] {host} Postern IMAP ready"));
        s
    }

    /// Sets the client's address named in log lines.
    pub fn set_peer(&mut self, peer: &str) {
        self.peer = peer.to_string();
    }

    /// Shares the process's literal budget (a new session has one of its own, unlimited).
    pub fn set_literal_budget(&mut self, budget: LiteralBudget) {
        self.literal_held.release();
        self.literal_budget = budget;
    }

    /// Longest command line and largest literal accepted now: before login only the
    /// small pre-login bounds, whatever the settings say.
    fn limits(&self) -> (usize, u64) {
        if self.user.is_some() {
            (
                self.settings.max_line,
                self.settings.max_literal.min(self.literal_budget.limit()),
            )
        } else {
            (
                self.settings.max_line.min(PRELOGIN_MAX_LINE),
                self.settings.max_literal.min(PRELOGIN_MAX_LITERAL),
            )
        }
    }

    /// The capability list.
    pub fn capabilities(&self) -> String {
        let mut c = String::from(
            "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE SPECIAL-USE \
             CHILDREN LIST-EXTENDED LIST-STATUS ESEARCH MULTIAPPEND BINARY STATUS=SIZE \
             SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES SEARCHRES CONDSTORE QRESYNC OBJECTID SAVEDATE CREATE-SPECIAL-USE PREVIEW REPLACE \
             QUOTA QUOTA=RES-STORAGE UIDONLY CONTEXT=SEARCH CONTEXT=SORT CATENATE NOTIFY URLAUTH URLAUTH=BINARY \
             I18NLEVEL=1",
        );
        if self.settings.starttls && !self.tls && self.user.is_none() {
            c.push_str(" STARTTLS");
        }
        if self.user.is_some() && !self.compressed {
            c.push_str(" COMPRESS=DEFLATE");
        }
        if self.secure {
            c.push_str(" AUTH=PLAIN");
        } else {
            c.push_str(" LOGINDISABLED");
        }
        c
    }

    pub(crate) fn line(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Output to write to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        let out = std::mem::take(&mut self.out);
        self.transcript.server(&out);
        out
    }

    /// Whether the session is over (write the output, then close).
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// The logged-in user.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether a command is half done (a large FETCH, a long SEARCH) or received commands wait for the
    /// client to read the output of those before them: call [`Session::resume`] once the
    /// output taken so far has been written (and read no more input meanwhile).
    pub fn busy(&self) -> bool {
        self.pending_fetch.is_some() || self.pending_search.is_some() || self.pending_store.is_some() || self.held_back
    }

    /// Goes on with a half-done command, then with any commands already received.
    pub fn resume(&mut self) -> Option<Need> {
        self.own_input(Session::resume_with)
    }

    /// [`Session::resume`] with the commands received in `input`.
    pub fn resume_with(&mut self, input: &mut LineBuffer) -> Option<Need> {
        self.attach();
        let need = self.resume_attached(input);
        self.detach();
        need
    }

    fn resume_attached(&mut self, input: &mut LineBuffer) -> Option<Need> {
        self.held_back = false;
        if let Some(job) = self.pending_fetch.take()
            && let Err(reply) = self.run_fetch(job)
        {
            self.line(&format!("* BAD {}", reply.text()));
        }
        if let Some(job) = self.pending_search.take() {
            self.run_search(job);
        }
        if let Some(job) = self.pending_store.take() {
            self.run_store(job);
        }
        if self.pending_fetch.is_some() || self.pending_search.is_some() || self.pending_store.is_some() {
            return None;
        }
        self.process(input)
    }

    /// Whether the session waits for the auth daemon (read no more input meanwhile).
    pub fn waiting(&self) -> bool {
        matches!(self.mode, Mode::Waiting(_))
    }

    /// Whether the session is logged in.
    pub fn authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// Ends the connection once the output so far is written, without a BYE (a literal
    /// being sent cannot be ended early): for a message file that fails mid-FETCH.
    pub(crate) fn lost(&mut self, why: &str) {
        tracing::warn!("{why}; connection closed, {}", self.who());
        self.closed = true;
    }

    /// Closes with a BYE.
    pub fn bye(&mut self, why: &str) {
        self.line(&format!("* BYE {why}"));
        self.closed = true;
    }

    /// Forgets the command being received and gives its literals' budget back.
    fn drop_command(&mut self) {
        self.cmd = Vec::new();
        self.literal_held.release();
        self.spooled.clear();
        self.spooling = false;
    }

    /// A command line or command over the bound: BYE, logged.
    fn too_long(&mut self) {
        self.drop_command();
        let when = if self.user.is_some() { "" } else { " before login" };
        tracing::info!("command line too long{when} from {}", self.peer);
        self.bye(&format!("[TOOBIG] Command line too long{when}"));
    }

    /// Bytes from the client (held by the session: for tests and fuzzing; a connection
    /// gives its buffer to [`Session::run`]).
    pub fn input(&mut self, data: &[u8]) -> Option<Need> {
        // (never refused: the session's own buffer has no bound of its own)
        let _ = self.inbuf.push(data);
        self.own_input(Session::run)
    }

    /// Runs `f` on the session's own input buffer; anything pipelined after STARTTLS came
    /// in the clear and is dropped.
    fn own_input(&mut self, f: impl FnOnce(&mut Session, &mut LineBuffer) -> Option<Need>) -> Option<Need> {
        let mut input = std::mem::replace(&mut self.inbuf, LineBuffer::new(1, 0));
        let need = f(self, &mut input);
        if need == Some(Need::StartTls) {
            input.take_pending();
        }
        self.inbuf = input;
        need
    }

    /// Runs the commands framed in `input` (IMAP's lines and literals: what is used is
    /// taken from it; a partial command is left, or its literal taken as it comes).
    pub fn run(&mut self, input: &mut LineBuffer) -> Option<Need> {
        self.attach();
        let need = self.process(input);
        self.detach();
        need
    }

    /// Takes the selected folder's state out of the process's shared registry for a
    /// command, with the session's view rebuilt from its mirror.
    fn attach(&mut self) {
        let Some(sel) = self.sel.as_mut() else { return };
        if !sel.folder.is_placeholder() {
            return;
        }
        // changes made before this command came are seen by it
        postern_mailbox::shared::watch_events();
        match sel.handle.take() {
            Some(f) => sel.folder = f,
            None => match Folder::open(sel.handle.path()) {
                Ok(f) => sel.folder = f,
                Err(e) => {
                    tracing::warn!("{}: {e}", sel.handle.path().display());
                    return;
                }
            },
        }
        if let Some(m) = sel.mirror.take() {
            sel.view = rebuild_view(&sel.folder, m);
        }
    }

    /// Puts the selected folder's state back; when nothing is half done and the view
    /// equals the state, keeps only a mirror of it.
    fn detach(&mut self) {
        let busy = self.busy();
        let Some(sel) = self.sel.as_mut() else { return };
        if sel.folder.is_placeholder() {
            return;
        }
        // a report with expunges left the view equal to the state, and nothing changed
        // since: no need to compare them
        let same = !busy
            && (sel.reported == Some(sel.folder.generation())
                || (sel.view.len() == sel.folder.messages().len()
                    && sel
                        .view
                        .iter()
                        .zip(sel.folder.messages())
                        .all(|(v, m)| v.0 == m.uid && v.1 == m.flags)));
        if same {
            sel.mirror = Some(Mirror {
                generation: sel.folder.generation(),
                modseq: sel.folder.highest_modseq(),
                last_uid: sel.view.last().map_or(0, |v| v.0),
            });
            sel.view = Vec::new();
        }
        let f = std::mem::replace(&mut sel.folder, Folder::placeholder());
        sel.handle.put(f);
        // what a large command left in the buffers goes back (the driver frees its input
        // buffer itself)
        if self.cmd.is_empty() && self.cmd.capacity() > 64 * 1024 {
            self.cmd = Vec::new();
        }
    }

    /// Login refused before the session starts: the user has too many sessions.
    pub fn auth_limited(&mut self) -> Option<Need> {
        self.own_input(Session::auth_limited_with)
    }

    /// [`Session::auth_limited`], then the commands received in `input`.
    pub fn auth_limited_with(&mut self, input: &mut LineBuffer) -> Option<Need> {
        let Mode::Waiting(tag) = std::mem::replace(&mut self.mode, Mode::Normal) else {
            return None;
        };
        self.line(&format!("{tag} NO [LIMIT] Too many sessions for this user"));
        self.run(input)
    }

    /// The auth daemon's answer: `Ok(account)` or why not.
    pub fn auth_done(&mut self, result: Result<Account, LoginFailure>) -> Option<Need> {
        self.own_input(|s, input| s.auth_done_with(result, input))
    }

    /// [`Session::auth_done`], then the commands received in `input`.
    pub fn auth_done_with(&mut self, result: Result<Account, LoginFailure>, input: &mut LineBuffer) -> Option<Need> {
        let Mode::Waiting(tag) = std::mem::replace(&mut self.mode, Mode::Normal) else {
            return None;
        };
        match result {
            Ok(Account { name: user, quota }) => match Store::open(&self.settings.mail_base, &user) {
                Ok(mut store) => {
                    tracing::info!("login: user={user}");
                    self.transcript.login(&user, &self.peer);
                    store.set_quota(quota);
                    self.store = Some(store);
                    self.user = Some(user);
                    let caps = self.capabilities();
                    self.line(&format!("{tag} OK [CAPABILITY {caps}] Logged in"));
                }
                Err(e) => {
                    tracing::warn!("mailbox of {user}: {e}");
                    self.line(&format!("{tag} NO [UNAVAILABLE] Mailbox unavailable"));
                }
            },
            Err(LoginFailure::Refused(reason)) => {
                tracing::info!("login failed: {reason}");
                self.line(&format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed"));
            }
            // RFC 5530: the password may be fine; clients keep it and try again later.
            Err(LoginFailure::Unavailable(reason)) => {
                tracing::warn!("login not checked: {reason}");
                self.line(&format!(
                    "{tag} NO [UNAVAILABLE] Temporary authentication failure, try again later"
                ));
            }
        }
        self.run(input)
    }

    /// Called about twice a second, and when the folder's watch saw a change: while
    /// idling, report what changed (nothing to do while the shared state's generation is
    /// the one the session's view mirrors).
    pub fn poll(&mut self) {
        if !matches!(self.mode, Mode::Idle(_)) {
            return;
        }
        // NOTIFY (RFC 5465): the other folders' changes
        self.notify_poll(false);
        if let Some(sel) = self.sel.as_ref()
            && let Some(m) = sel.mirror
            && sel.handle.refresh() == Some(m.generation)
        {
            return;
        }
        // the view put away: what changed is told from the mirror, no view built
        if self.report_from_mirror() {
            return;
        }
        self.attach();
        self.report(true);
        self.detach();
    }

    fn process(&mut self, input: &mut LineBuffer) -> Option<Need> {
        let started = std::time::Instant::now();
        while !self.closed {
            if matches!(self.mode, Mode::Waiting(_))
                || self.pending_fetch.is_some()
                || self.pending_search.is_some()
                || self.pending_store.is_some()
            {
                return None;
            }
            // pipelined commands: at most a slice of time or of unread output at a stretch
            let pause = if self.user.is_some() {
                OUTPUT_PAUSE
            } else {
                PRELOGIN_OUTPUT_PAUSE
            };
            if self.out.len() > pause || started.elapsed() > WORK_SLICE {
                self.held_back = true;
                return None;
            }
            if self.literal_need > 0 {
                let n = self.literal_need.min(input.pending_len());
                let literal = input.take_up_to(n);
                self.transcript.client(&literal);
                if self.spooling {
                    self.spool_write(&literal);
                } else {
                    self.cmd.extend_from_slice(&literal);
                }
                self.literal_need -= n;
                if self.literal_need > 0 {
                    return None;
                }
                self.spooling = false;
            }
            let (max_line, max_literal) = self.limits();
            let Some(eol) = memchr::memchr(b'\n', input.pending()) else {
                if input.pending_len() > max_line {
                    self.too_long();
                }
                return None;
            };
            if eol > max_line {
                self.too_long();
                return None;
            }
            let mut line = input.take_up_to(eol + 1);
            self.transcript.client(&line);
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            match std::mem::replace(&mut self.mode, Mode::Normal) {
                Mode::Idle(tag) => {
                    if line.eq_ignore_ascii_case(b"DONE") {
                        self.report(true);
                        self.line(&format!("{tag} OK Idle completed"));
                    } else {
                        self.line(&format!("{tag} BAD Expected DONE"));
                    }
                    continue;
                }
                Mode::AuthPlain(tag) => {
                    if let Some(need) = self.auth_plain(&tag, &line) {
                        return Some(need);
                    }
                    continue;
                }
                Mode::Waiting(t) => self.mode = Mode::Waiting(t),
                Mode::Normal => {}
            }
            if self.cmd.len() + line.len() > max_line + max_literal as usize {
                self.too_long();
                return None;
            }
            self.cmd.extend_from_slice(&line);
            if let Some((n, sync)) = literal_at_end(&line) {
                if n > max_literal {
                    let tag = tag_of(&self.cmd);
                    self.drop_command();
                    let when = if self.user.is_some() { "" } else { " before login" };
                    tracing::info!(
                        "literal of {n} bytes refused{when} from {} (limit {max_literal})",
                        self.peer
                    );
                    if sync {
                        // The client waits for "+" and sends nothing: refuse, go on.
                        self.line(&format!("{tag} NO [TOOBIG] Literal too large{when}"));
                    } else {
                        // LITERAL+: the bytes are on their way; none of them is read.
                        self.bye(&format!("[TOOBIG] Literal too large{when}"));
                    }
                    continue;
                }
                // a large APPEND literal goes to the folder's tmp/, not to memory
                if n > SPOOL_ABOVE
                    && let Some(refusal) = self.spool_start(&line, n, sync)
                {
                    match refusal {
                        None => continue,
                        Some(reply) => {
                            let tag = tag_of(&self.cmd);
                            self.drop_command();
                            self.line(&format!("{tag} {}", reply.text()));
                            continue;
                        }
                    }
                }
                // a small literal in a short command (a password, a search string) is held
                // by the command's own bound and not counted, so a budget filled by large
                // APPENDs never refuses a login or a search
                let small = n <= SMALL_LITERAL && self.cmd.len() as u64 + n <= SMALL_COMMAND;
                if !small && !self.literal_budget.take(&mut self.literal_held, n) {
                    self.busy_refusal(n, sync);
                    continue;
                }
                self.cmd.extend_from_slice(b"\r\n");
                // exactly: no doubling of a large literal's buffer as it fills
                self.cmd.reserve_exact(n as usize);
                self.literal_need = n as usize;
                if sync {
                    self.line("+ Ready for literal data");
                }
                continue;
            }
            let cmd = std::mem::take(&mut self.cmd);
            let need = self.execute(&cmd);
            drop(cmd);
            self.literal_held.release();
            // what the command did not use is removed
            self.spooled.clear();
            if need.is_some() {
                return need;
            }
        }
        None
    }

    /// A literal that does not fit the process's budget now: refused unread, logged.
    fn busy_refusal(&mut self, n: u64, sync: bool) {
        let tag = tag_of(&self.cmd);
        self.drop_command();
        tracing::warn!(
            "literal of {n} bytes refused from {}, user={}: the process holds {} of its {} bytes \
             of literals (imapd_literal_memory_limit)",
            self.peer,
            self.user.as_deref().unwrap_or("-"),
            self.literal_budget.used(),
            self.literal_budget.limit()
        );
        // RFC 5530 UNAVAILABLE: a temporary condition; the same command may succeed later
        const BUSY: &str = "[UNAVAILABLE] Server busy, try again later";
        if sync {
            // the client waits for "+" and sends nothing: refuse, go on
            self.line(&format!("{tag} NO {BUSY}"));
        } else {
            // LITERAL+: the bytes are on their way and none of them may be read
            self.bye(BUSY);
        }
    }

    fn execute(&mut self, raw: &[u8]) -> Option<Need> {
        let cmd = match parse::command(raw) {
            Ok(c) => c,
            Err(e) => {
                self.line(&format!("{} BAD {}", e.tag, e.reason));
                return None;
            }
        };
        let result = self.dispatch(&cmd);
        match result {
            Ok(Some(n @ (Need::StartTls | Need::Compress))) => Some(n),
            Ok(Some(need)) => {
                self.mode = Mode::Waiting(cmd.tag.clone());
                Some(need)
            }
            Ok(None) => None,
            Err(reply) => {
                self.line(&format!("{} {}", cmd.tag, reply.text()));
                None
            }
        }
    }

    fn dispatch(&mut self, c: &Command) -> Result<Option<Need>, Reply> {
        let tag = c.tag.as_str();
        let authed = self.user.is_some();
        let selected = self.sel.is_some();
        match c.name.as_str() {
            "CAPABILITY" => {
                let caps = self.capabilities();
                self.line(&format!("* CAPABILITY {caps}"));
                self.ok(tag, "Capability completed");
            }
            "NOOP" | "CHECK" => {
                self.report(true);
                self.notify_poll(true);
                self.ok(tag, "Completed");
            }
            "LOGOUT" => {
                self.line("* BYE Logging out");
                self.ok(tag, "Logout completed");
                self.closed = true;
            }
            "ID" => {
                self.line("* ID (\"name\" \"Postern\")");
                self.ok(tag, "ID completed");
            }
            "STARTTLS" if self.tls || authed => return Err(Reply::Bad("TLS is already active or too late".into())),
            "STARTTLS" if !self.settings.starttls => return Err(Reply::Bad("STARTTLS is not available".into())),
            "STARTTLS" => {
                self.ok(tag, "Begin TLS negotiation now");
                // Anything pipelined after STARTTLS came in the clear: the connection drops it.
                self.tls = true;
                self.secure = true;
                return Ok(Some(Need::StartTls));
            }
            "LOGIN" if !authed => return self.login(c).map(Some),
            "AUTHENTICATE" if !authed => return self.authenticate(c),
            "LOGIN" | "AUTHENTICATE" => return Err(Reply::Bad("Already logged in".into())),
            _ if !authed => return Err(Reply::Bad("Log in first".into())),
            "ENABLE" => self.enable(c)?,
            "COMPRESS" => return self.compress(c),
            "NAMESPACE" => {
                self.line("* NAMESPACE ((\"\" \".\")) NIL NIL");
                self.ok(tag, "Namespace completed");
            }
            "SELECT" | "EXAMINE" => self.select(c)?,
            "CREATE" | "DELETE" | "RENAME" | "SUBSCRIBE" | "UNSUBSCRIBE" => self.manage(c)?,
            "LIST" | "LSUB" => self.list(c)?,
            "STATUS" => self.status(c)?,
            "APPEND" => self.append(c)?,
            "GETQUOTA" | "GETQUOTAROOT" | "SETQUOTA" => self.quota_command(c)?,
            "GENURLAUTH" | "URLFETCH" | "RESETKEY" => self.urlauth_command(c)?,
            "NOTIFY" => self.notify_command(c)?,
            "IDLE" => {
                self.report(true);
                self.line("+ idling");
                self.mode = Mode::Idle(c.tag.clone());
            }
            "CLOSE" | "UNSELECT" | "EXPUNGE" | "FETCH" | "STORE" | "SEARCH" | "COPY" | "MOVE" | "UID" | "SORT"
            | "THREAD" | "REPLACE" | "CANCELUPDATE"
                if !selected =>
            {
                return Err(Reply::Bad("Select a mailbox first".into()));
            }
            "CLOSE" | "UNSELECT" => {
                if c.name == "CLOSE" {
                    self.expunge_deleted(None, false)?;
                }
                self.sel = None;
                self.ok(tag, "Closed");
            }
            "EXPUNGE" => {
                self.expunge_deleted(None, true)?;
                self.report(true);
                self.ok(tag, "Expunge completed");
            }
            "CANCELUPDATE" => self.cancel_update(tag, &c.args)?,
            "FETCH" | "STORE" | "SEARCH" | "COPY" | "MOVE" | "SORT" | "THREAD" | "REPLACE" if self.uidonly => {
                self.check_uidonly(&c.name)?;
            }
            "FETCH" | "STORE" | "SEARCH" | "COPY" | "MOVE" => self.message_command(tag, &c.name, &c.args, false)?,
            "SORT" | "THREAD" => self.sort_or_thread(tag, &c.name, &c.args, false)?,
            "REPLACE" => self.replace(tag, &c.args, false)?,
            "UID" => {
                let Some(sub) = c.args.first().and_then(Arg::keyword) else {
                    return Err(Reply::Bad("UID what?".into()));
                };
                if sub == "EXPUNGE" {
                    let set = c.args.get(1).and_then(Arg::text).and_then(|s| SeqSet::parse(&s));
                    let Some(set) = set else {
                        return Err(Reply::Bad("Invalid UID set".into()));
                    };
                    self.expunge_deleted(Some(set), true)?;
                    self.report(true);
                    self.ok(tag, "Expunge completed");
                } else if sub == "REPLACE" {
                    self.replace(tag, c.args.get(1..).unwrap_or_default(), true)?;
                } else if sub == "SORT" || sub == "THREAD" {
                    self.sort_or_thread(tag, &sub, c.args.get(1..).unwrap_or_default(), true)?;
                } else if ["FETCH", "STORE", "SEARCH", "COPY", "MOVE"].contains(&sub.as_str()) {
                    self.message_command(tag, &sub, c.args.get(1..).unwrap_or_default(), true)?;
                } else {
                    return Err(Reply::Bad("Unknown UID command".into()));
                }
            }
            _ => return Err(Reply::Bad("Unknown command".into())),
        }
        Ok(None)
    }

    /// Switches CONDSTORE on (RFC 7162 §3.1) for a CONDSTORE-enabling command; the first
    /// time, with a mailbox selected, its HIGHESTMODSEQ is told before the command's
    /// answer.
    pub(crate) fn condstore_on(&mut self) {
        if self.condstore {
            return;
        }
        self.condstore = true;
        if let Some(sel) = self.sel.as_ref() {
            let h = sel.folder.highest_modseq();
            self.line(&format!("* OK [HIGHESTMODSEQ {h}] Highest"));
        }
    }

    /// ENABLE (RFC 5161): IMAP4rev2 and CONDSTORE (RFC 7162) switch behaviour on; others
    /// are ignored, as the RFC asks.
    fn enable(&mut self, c: &Command) -> Result<(), Reply> {
        if c.args.is_empty() {
            return Err(Reply::Bad("ENABLE needs a capability".into()));
        }
        let mut enabled = String::from("* ENABLED");
        for a in &c.args {
            let Some(k) = a.keyword() else {
                return Err(Reply::Bad("Invalid ENABLE argument".into()));
            };
            if k == "IMAP4REV2" && !self.rev2 {
                self.rev2 = true;
                enabled.push_str(" IMAP4rev2");
            }
            if k == "CONDSTORE" && !self.condstore && !enabled.contains(" CONDSTORE") {
                enabled.push_str(" CONDSTORE");
            }
            // QRESYNC implies CONDSTORE (RFC 7162 §3.2.3)
            if k == "UIDONLY" && !self.uidonly {
                self.uidonly = true;
                enabled.push_str(" UIDONLY");
            }
            if k == "QRESYNC" && !self.qresync {
                self.qresync = true;
                enabled.push_str(" QRESYNC");
            }
        }
        self.line(&enabled);
        if enabled.contains(" CONDSTORE") || enabled.contains(" QRESYNC") {
            self.condstore_on();
        }
        self.ok(&c.tag, "Enabled");
        Ok(())
    }

    fn authenticate(&mut self, c: &Command) -> Result<Option<Need>, Reply> {
        let mech = c.args.first().and_then(Arg::keyword).unwrap_or_default();
        if mech != "PLAIN" {
            return Err(Reply::No("Unsupported authentication mechanism".into()));
        }
        if !self.secure {
            return Err(Reply::No("[PRIVACYREQUIRED] Use TLS".into()));
        }
        match c.args.get(1).and_then(Arg::text) {
            Some(initial) => Ok(self.auth_plain(&c.tag, initial.as_bytes())),
            None => {
                self.line("+ ");
                self.mode = Mode::AuthPlain(c.tag.clone());
                Ok(None)
            }
        }
    }

    fn auth_plain(&mut self, tag: &str, line: &[u8]) -> Option<Need> {
        use base64::Engine;
        if line == b"*" {
            self.line(&format!("{tag} BAD Authentication cancelled"));
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(line).ok();
        let parts: Option<Vec<String>> = decoded.as_ref().and_then(|d| {
            let v: Vec<&[u8]> = d.split(|&b| b == 0).collect();
            if v.len() != 3 {
                return None;
            }
            v.iter().map(|p| String::from_utf8(p.to_vec()).ok()).collect()
        });
        if let Some(mut d) = decoded {
            zeroize::Zeroize::zeroize(&mut d);
        }
        match parts {
            Some(p) => {
                self.mode = Mode::Waiting(tag.to_string());
                // an authorization identity other than the login: a master login (auth decides)
                Some(Need::Verify {
                    user: postern_lib::proto::auth::plain_login(&p[0], &p[1]),
                    password: p[2].clone(),
                })
            }
            None => {
                self.line(&format!("{tag} BAD Invalid SASL PLAIN response"));
                None
            }
        }
    }

    fn login(&mut self, c: &Command) -> Result<Need, Reply> {
        if !self.secure {
            return Err(Reply::No("[PRIVACYREQUIRED] LOGIN is disabled without TLS".into()));
        }
        let (Some(user), Some(password), None) = (
            c.args.first().and_then(Arg::text),
            c.args.get(1).and_then(Arg::text),
            c.args.get(2),
        ) else {
            return Err(Reply::Bad("LOGIN needs a user name and a password".into()));
        };
        Ok(Need::Verify { user, password })
    }

    pub(crate) fn ok(&mut self, tag: &str, text: &str) {
        self.line(&format!("{tag} OK {text}"));
    }

    /// The store, for commands that run only when logged in.
    pub(crate) fn store(&self) -> Result<&Store, Reply> {
        self.store.as_ref().ok_or(Reply::Bad("Log in first".into()))
    }
}

/// The session's own input buffer ([`Session::input`]): unbounded but for the session's
/// own line and literal bounds.
fn own_input() -> LineBuffer {
    LineBuffer::new(postern_lib::line::MAX_LINE_LIMIT, usize::MAX / 4)
}

/// The tagged reply of a failed command.
#[derive(Debug)]
pub enum Reply {
    /// `NO text`.
    No(String),
    /// `BAD text`.
    Bad(String),
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        match self {
            Reply::No(t) => format!("NO {t}"),
            Reply::Bad(t) => format!("BAD {t}"),
        }
    }
}

/// The one place where store errors become IMAP replies.
impl From<MailboxError> for Reply {
    fn from(e: MailboxError) -> Reply {
        match e {
            MailboxError::NoSuchFolder(_) => Reply::No("[NONEXISTENT] No such mailbox".into()),
            MailboxError::Exists(_) => Reply::No("[ALREADYEXISTS] Mailbox already exists".into()),
            MailboxError::BadName(_) => Reply::No("[CANNOT] Invalid mailbox name".into()),
            MailboxError::Inbox(_) => Reply::No("[CANNOT] Not allowed for INBOX".into()),
            MailboxError::TooManyKeywords => Reply::No("[LIMIT] Too many keywords".into()),
            e => {
                tracing::warn!("mailbox: {e}");
                Reply::No("[SERVERBUG] Internal error".into())
            }
        }
    }
}

fn tag_of(cmd: &[u8]) -> String {
    let end = cmd.iter().position(|&b| b == b' ').unwrap_or(cmd.len());
    let t = String::from_utf8_lossy(&cmd[..end]).into_owned();
    if t.is_empty() { "*".into() } else { t }
}

/// `{n}` or `{n+}` at the end of a line: (n, synchronising).
pub(crate) fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let inner = &body[open + 1..];
    let (digits, sync) = match inner.last() {
        Some(b'+') | Some(b'-') => (&inner[..inner.len() - 1], false),
        _ => (inner, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 19 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok().map(|n| (n, sync))
}

/// For fuzzing (`fuzz/fuzz_targets/imap_prelogin.rs`): a whole session before login, fed
/// in chunks as the server reads them (the first byte of `data` picks the chunk size),
/// auth answering every password check with a refusal, an outage or a mailbox that cannot
/// be opened (the next byte decides). Checks what must hold for any input: no panic, the
/// session never counts as logged in, the bytes it holds stay within the pre-login bounds,
/// and every reply is whole CRLF-terminated lines.
pub fn fuzz_prelogin(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(first) * 16;
    let settings = Settings {
        mail_base: PathBuf::from("/nonexistent"),
        max_literal: 50 * 1024 * 1024,
        max_line: 64 * 1024,
        hostname: "fuzz.example.test".into(),
        starttls: true,
    };
    let mut s = Session::new(settings, first & 1 == 0, false);
    // unparsed input: a line and a read; the command: lines and literals up to a line and
    // a literal, then at most one more literal
    let bound = 2 * PRELOGIN_MAX_LINE + 2 * PRELOGIN_MAX_LITERAL as usize + 4 + chunk;
    let mut answers = rest.iter().rev().copied();
    for piece in rest.chunks(chunk) {
        if s.closed() {
            break;
        }
        let mut need = s.input(piece);
        while let Some(n) = need.take() {
            need = match n {
                Need::Verify { .. } => s.auth_done(match answers.next().unwrap_or(0) % 3 {
                    0 => Err(LoginFailure::Refused("fuzz".into())),
                    1 => Err(LoginFailure::Unavailable("fuzz".into())),
                    // auth says yes, but the mailbox cannot be opened (a name the store
                    // refuses, so nothing is created on disk): still not logged in
                    _ => Ok("no/such/user".into()),
                }),
                Need::StartTls | Need::Compress => None,
            };
        }
        assert!(!s.authenticated(), "logged in without a mailbox");
        assert!(
            s.inbuf.pending_len() + s.cmd.len() <= bound,
            "{} bytes held before login",
            s.inbuf.pending_len() + s.cmd.len()
        );
        let out = s.take_output();
        assert!(out.is_empty() || out.ends_with(b"\r\n"), "a partial reply line");
    }
}

#[cfg(test)]
mod prelogin_tests {
    use super::*;

    fn session() -> Session {
        let mut s = Session::new(
            Settings {
                mail_base: PathBuf::from("/nonexistent"),
                max_literal: 50 * 1024 * 1024,
                max_line: 64 * 1024,
                hostname: "mail.example.test".into(),
                starttls: false,
            },
            true,
            false,
        );
        s.take_output();
        s
    }

    #[test]
    fn literals_and_lines_before_login_are_held_to_a_few_kb() {
        let mut s = session();
        assert_eq!(s.input(b"a LOGIN {8193}\r\n"), None);
        assert_eq!(s.take_output(), b"a NO [TOOBIG] Literal too large before login\r\n");
        assert_eq!(s.input(b"b LOGIN {8192}\r\n"), None);
        assert_eq!(s.take_output(), b"+ Ready for literal data\r\n");
        s.input(&[b'x'; 8192]);
        // within the bounds: auth judges it
        assert!(matches!(s.input(b" pw\r\n"), Some(Need::Verify { .. })));
        assert_eq!(s.auth_done(Err(LoginFailure::Refused("no".into()))), None);
        assert!(s.take_output().starts_with(b"b NO [AUTHENTICATIONFAILED]"));
        s.input(b"c LOGIN {52000000+}\r\nxxxx");
        assert_eq!(s.take_output(), b"* BYE [TOOBIG] Literal too large before login\r\n");
        assert!(s.closed());
        let mut s = session();
        s.input(&[b'a'; PRELOGIN_MAX_LINE + 1]);
        assert_eq!(
            s.take_output(),
            b"* BYE [TOOBIG] Command line too long before login\r\n"
        );
        assert!(s.closed());
    }

    #[test]
    fn fuzz_entry_point_runs() {
        fuzz_prelogin(b"\x00a LOGIN {5}\r\nalice {6+}\r\nsecret\r\nb NOOP\r\n");
        fuzz_prelogin(b"\x07a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n\x02");
    }
}

#[cfg(test)]
mod literal_budget_tests {
    use super::*;

    fn logged_in(dir: &std::path::Path, budget: &LiteralBudget) -> Session {
        let mut s = Session::new(
            Settings {
                mail_base: dir.to_path_buf(),
                max_literal: 100_000,
                max_line: 200,
                hostname: "mail.example.test".into(),
                starttls: false,
            },
            true,
            false,
        );
        s.set_literal_budget(budget.clone());
        assert!(s.input(b"a LOGIN alice secret\r\n").is_some());
        assert_eq!(s.auth_done(Ok("alice".into())), None);
        s.take_output();
        s
    }

    #[test]
    fn literals_over_the_process_budget_are_refused_unread_and_the_budget_comes_back() {
        // in-memory literals: under SPOOL_ABOVE, or APPEND's would go to tmp/

        let dir = tempfile::tempdir().unwrap();
        let budget = LiteralBudget::new(75_000);
        let mut a = logged_in(dir.path(), &budget);
        let mut b = logged_in(dir.path(), &budget);
        let mut c = logged_in(dir.path(), &budget);
        a.input(b"1 APPEND INBOX {50000}\r\n");
        assert_eq!(a.take_output(), b"+ Ready for literal data\r\n");
        a.input(&[b'x'; 10]);
        assert_eq!(budget.used(), 50_000);
        // another session's literal does not fit now: refused, nothing read
        b.input(b"2 APPEND INBOX {30000}\r\n");
        assert_eq!(b.take_output(), b"2 NO [UNAVAILABLE] Server busy, try again later\r\n");
        assert_eq!(budget.used(), 50_000);
        // one that fits fills the budget
        b.input(b"3 APPEND INBOX {25000}\r\nSubject: y\r\n");
        assert_eq!(b.take_output(), b"+ Ready for literal data\r\n");
        assert_eq!(budget.used(), 75_000);
        // a small literal in a short command (a password, a search string) is not
        // counted: a full budget never refuses it
        c.input(b"4 STATUS {5}\r\n");
        assert_eq!(c.take_output(), b"+ Ready for literal data\r\n");
        c.input(b"INBOX (MESSAGES)\r\n");
        assert!(String::from_utf8_lossy(&c.take_output()).contains("4 OK"));
        assert_eq!(budget.used(), 75_000);
        // LITERAL+ that does not fit: BYE, nothing read
        c.input(b"5 APPEND INBOX {30000+}\r\nxxxx");
        assert_eq!(c.take_output(), b"* BYE [UNAVAILABLE] Server busy, try again later\r\n");
        assert!(c.closed());
        // the first APPEND completes, the second's client goes away: all of it back
        let mut msg = b"Subject: x\r\n\r\n".to_vec();
        msg.resize(50_000 - 10, b'y');
        a.input(&msg);
        a.input(b"\r\n");
        let out = String::from_utf8(a.take_output()).unwrap();
        assert!(out.contains("1 OK"), "{out}");
        assert_eq!(budget.used(), 25_000);
        drop(b);
        assert_eq!(budget.used(), 0);
        // a session that ends mid-literal gives its part back
        a.input(b"6 APPEND INBOX {45000}\r\nabc");
        assert_eq!(budget.used(), 45_000);
        drop(a);
        assert_eq!(budget.used(), 0);
        // a command that grows too long mid-way gives its literals back too
        let mut d = logged_in(dir.path(), &budget);
        d.input(b"7 APPEND INBOX {10000}\r\n");
        d.input(&[b'z'; 10_000]);
        assert_eq!(budget.used(), 10_000);
        d.input(&[b'q'; 300]);
        assert!(d.closed());
        assert_eq!(budget.used(), 0);
    }
}

#[cfg(test)]
mod output_pause_tests {
    use super::*;

    #[test]
    fn pipelined_commands_wait_while_their_output_is_unread() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Session::new(
            Settings {
                mail_base: dir.path().to_path_buf(),
                max_literal: 1000,
                max_line: 200,
                hostname: "mail.example.test".into(),
                starttls: false,
            },
            true,
            false,
        );
        assert!(s.input(b"a LOGIN alice secret\r\n").is_some());
        s.auth_done(Ok("alice".into()));
        s.take_output();
        // 20,000 pipelined CAPABILITY commands, about 6 MB of answers
        let burst = b"c CAPABILITY\r\n".repeat(20_000);
        s.input(&burst);
        assert!(s.busy(), "commands held back");
        let first = s.take_output();
        // (a loaded machine may end the first round by WORK_SLICE before OUTPUT_PAUSE)
        assert!(first.len() < OUTPUT_PAUSE + 1024);
        let mut total = first.len();
        let mut rounds = 0;
        while s.busy() {
            s.resume();
            let out = s.take_output();
            assert!(out.len() < OUTPUT_PAUSE + 1024);
            total += out.len();
            rounds += 1;
        }
        assert!(rounds >= 4);
        let one = b"* CAPABILITY ".len() + s.capabilities().len() + 2 + b"c OK Capability completed\r\n".len();
        assert_eq!(total, 20_000 * one);
    }
}
