//! The Milter wire format: packets and the command, reply, action and protocol constants
//! of libmilter's `mfdef.h` (protocol version 6).
//!
//! A packet is a 4-byte big-endian length (counting the command byte and the data), one
//! command byte, and the data. Strings in the data are NUL-terminated.

use std::io::{self, Read, Write};

use super::MilterError;

/// The protocol version we speak.
pub const VERSION: u32 = 6;
/// Largest body chunk we send.
pub const CHUNK: usize = 65_535;
/// Largest packet we accept from a milter (a 1 MiB body chunk after `SMFIP_MDS_1M`, plus
/// room).
pub const MAX_PACKET: usize = (1 << 20) + 64;

/// Commands, MTA → milter.
pub mod cmd {
    /// Abort the current message.
    pub const ABORT: u8 = b'A';
    /// A body chunk.
    pub const BODY: u8 = b'B';
    /// Connection information.
    pub const CONNECT: u8 = b'C';
    /// Macros for the next command.
    pub const MACRO: u8 = b'D';
    /// End of body.
    pub const BODYEOB: u8 = b'E';
    /// HELO/EHLO argument.
    pub const HELO: u8 = b'H';
    /// One header field.
    pub const HEADER: u8 = b'L';
    /// MAIL FROM.
    pub const MAIL: u8 = b'M';
    /// End of header.
    pub const EOH: u8 = b'N';
    /// Option negotiation.
    pub const OPTNEG: u8 = b'O';
    /// Close the connection.
    pub const QUIT: u8 = b'Q';
    /// RCPT TO.
    pub const RCPT: u8 = b'R';
    /// DATA.
    pub const DATA: u8 = b'T';
}

/// Replies and modification requests, milter → MTA.
pub mod reply {
    /// Add a recipient.
    pub const ADDRCPT: u8 = b'+';
    /// Delete a recipient.
    pub const DELRCPT: u8 = b'-';
    /// Add a recipient with ESMTP arguments.
    pub const ADDRCPT_PAR: u8 = b'2';
    /// The milter is shutting down.
    pub const SHUTDOWN: u8 = b'4';
    /// Accept the message; no more stages for this milter.
    pub const ACCEPT: u8 = b'a';
    /// A chunk of the replacement body.
    pub const REPLBODY: u8 = b'b';
    /// Continue.
    pub const CONTINUE: u8 = b'c';
    /// Accept and discard the message.
    pub const DISCARD: u8 = b'd';
    /// Change the envelope sender.
    pub const CHGFROM: u8 = b'e';
    /// Connection failure (temporary).
    pub const CONN_FAIL: u8 = b'f';
    /// Append a header field.
    pub const ADDHEADER: u8 = b'h';
    /// Insert a header field at an index.
    pub const INSHEADER: u8 = b'i';
    /// Which macros the milter wants (only inside the negotiation reply, in v6).
    pub const SETSYMLIST: u8 = b'l';
    /// Change or delete a header field.
    pub const CHGHEADER: u8 = b'm';
    /// Still working: wait longer.
    pub const PROGRESS: u8 = b'p';
    /// Quarantine (hold) the message.
    pub const QUARANTINE: u8 = b'q';
    /// Reject.
    pub const REJECT: u8 = b'r';
    /// Skip the rest of the body chunks.
    pub const SKIP: u8 = b's';
    /// Temporary failure.
    pub const TEMPFAIL: u8 = b't';
    /// Reject or tempfail with this SMTP reply.
    pub const REPLYCODE: u8 = b'y';
}

/// Protocol flags (what the milter does not want to see, or will not answer).
pub mod proto {
    /// No connect.
    pub const NOCONNECT: u32 = 0x1;
    /// No HELO.
    pub const NOHELO: u32 = 0x2;
    /// No MAIL.
    pub const NOMAIL: u32 = 0x4;
    /// No RCPT.
    pub const NORCPT: u32 = 0x8;
    /// No body.
    pub const NOBODY: u32 = 0x10;
    /// No headers.
    pub const NOHDRS: u32 = 0x20;
    /// No end of header.
    pub const NOEOH: u32 = 0x40;
    /// No reply to headers.
    pub const NR_HDR: u32 = 0x80;
    /// No unknown commands.
    pub const NOUNKNOWN: u32 = 0x100;
    /// No DATA.
    pub const NODATA: u32 = 0x200;
    /// The milter may answer SKIP to body chunks.
    pub const SKIP: u32 = 0x400;
    /// Also send rejected recipients.
    pub const RCPT_REJ: u32 = 0x800;
    /// No reply to connect.
    pub const NR_CONN: u32 = 0x1000;
    /// No reply to HELO.
    pub const NR_HELO: u32 = 0x2000;
    /// No reply to MAIL.
    pub const NR_MAIL: u32 = 0x4000;
    /// No reply to RCPT.
    pub const NR_RCPT: u32 = 0x8000;
    /// No reply to DATA.
    pub const NR_DATA: u32 = 0x10000;
    /// No reply to unknown commands.
    pub const NR_UNKN: u32 = 0x20000;
    /// No reply to end of header.
    pub const NR_EOH: u32 = 0x40000;
    /// No reply to body chunks.
    pub const NR_BODY: u32 = 0x80000;
    /// Header values keep their leading space.
    pub const HDR_LEADSPC: u32 = 0x100000;
    /// Body chunks up to 256 KiB.
    pub const MDS_256K: u32 = 0x1000_0000;
    /// Body chunks up to 1 MiB.
    pub const MDS_1M: u32 = 0x2000_0000;
    /// Every flag we support.
    pub const SUPPORTED: u32 = 0x1F_FFFF | MDS_256K | MDS_1M;
}

/// Actions the MTA allows the milter (`SMFIF_*`): we allow all of them.
pub const ALL_ACTIONS: u32 = 0x1FF;

/// Writes one packet.
pub fn send(w: &mut impl Write, command: u8, data: &[u8]) -> Result<(), MilterError> {
    let len = u32::try_from(data.len() + 1).map_err(|_| MilterError::Protocol("packet too large".into()))?;
    let mut buf = Vec::with_capacity(data.len() + 5);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.push(command);
    buf.extend_from_slice(data);
    w.write_all(&buf).map_err(io_err)?;
    Ok(())
}

/// Reads one packet: (command, data).
pub fn recv(r: &mut impl Read) -> Result<(u8, Vec<u8>), MilterError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(io_err)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_PACKET {
        return Err(MilterError::Protocol(format!("bad packet length {len}")));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).map_err(io_err)?;
    let command = data.remove(0);
    Ok((command, data))
}

/// Maps an I/O error, telling timeouts apart.
pub fn io_err(e: io::Error) -> MilterError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => MilterError::Timeout,
        io::ErrorKind::UnexpectedEof => MilterError::Closed,
        _ => MilterError::Io(e),
    }
}

/// Appends `s` and a NUL.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(s.iter().copied().filter(|&b| b != 0));
    out.push(0);
}

/// Splits NUL-terminated strings (a missing final NUL is tolerated).
pub fn strings(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    data.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}
