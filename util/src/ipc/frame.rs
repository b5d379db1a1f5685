//! Frames on the socket: `sendmsg`/`recvmsg` with exact lengths and `SCM_RIGHTS`.
//!
//! Reads never ask for more than the rest of the current frame. The sender attaches
//! descriptors to the first byte of a frame, and the kernel delivers them with the read
//! that returns that byte, so descriptors received while reading a frame were sent with it.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, recvmsg, sendmsg,
};

use super::{HEADER_LEN, IpcError, MAX_DATA_CHUNK, MAX_FDS, MAX_MESSAGE_LEN, kind};

/// Space for one `SCM_RIGHTS` message of `MAX_FDS` descriptors.
const CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// The largest payload a frame of `k` may have, or `None` for an unknown kind.
pub(super) fn max_payload(k: u8) -> Option<usize> {
    match k {
        kind::MESSAGE => Some(MAX_MESSAGE_LEN),
        kind::DATA => Some(MAX_DATA_CHUNK),
        kind::END => Some(0),
        _ => None,
    }
}

fn map_errno(e: Errno) -> IpcError {
    if e == Errno::AGAIN || e == Errno::WOULDBLOCK {
        IpcError::Timeout
    } else {
        IpcError::Io(io::Error::from(e))
    }
}

/// Sends one frame, the descriptors riding on its first byte.
pub(super) fn send(sock: &UnixStream, k: u8, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), IpcError> {
    let max = max_payload(k).ok_or(IpcError::BadKind(k))?;
    if payload.len() > max {
        return Err(IpcError::TooLarge {
            kind: k,
            len: payload.len() as u64,
            max: max as u64,
        });
    }
    if fds.len() > MAX_FDS {
        return Err(IpcError::TooManyFds);
    }
    let len = u32::try_from(payload.len()).map_err(|_| IpcError::TooLarge {
        kind: k,
        len: payload.len() as u64,
        max: max as u64,
    })?;
    let mut header = [0u8; HEADER_LEN];
    let (len_bytes, kind_byte) = header.split_at_mut(4);
    len_bytes.copy_from_slice(&len.to_be_bytes());
    if let Some(b) = kind_byte.first_mut() {
        *b = k;
    }
    let total = HEADER_LEN + payload.len();
    let mut sent = 0usize;
    let mut pending_fds = fds;
    while sent < total {
        let head_rest = header.get(sent.min(HEADER_LEN)..).unwrap_or_default();
        let body_rest = payload.get(sent.saturating_sub(HEADER_LEN)..).unwrap_or_default();
        let iov = [io::IoSlice::new(head_rest), io::IoSlice::new(body_rest)];
        let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !pending_fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(pending_fds)) {
            return Err(IpcError::TooManyFds);
        }
        match sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL) {
            Ok(0) => return Err(IpcError::Io(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => {
                sent += n;
                pending_fds = &[];
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(map_errno(e)),
        }
    }
    Ok(())
}

/// Receives one frame: its payload into `payload` (resized; never beyond the kind's
/// maximum) and any descriptors into `fds`. Returns the kind.
pub(super) fn recv(sock: &UnixStream, payload: &mut Vec<u8>, fds: &mut Vec<OwnedFd>) -> Result<u8, IpcError> {
    let mut header = [0u8; HEADER_LEN];
    let got = recv_exact(sock, &mut header, fds)?;
    if got == 0 {
        return Err(IpcError::Closed);
    }
    if got < HEADER_LEN {
        return Err(IpcError::Truncated);
    }
    let [l0, l1, l2, l3, k] = header;
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    let max = max_payload(k).ok_or(IpcError::BadKind(k))?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(IpcError::TooLarge {
            kind: k,
            len: len as u64,
            max: max as u64,
        });
    }
    payload.clear();
    payload.resize(len, 0);
    if recv_exact(sock, payload, fds)? < len {
        return Err(IpcError::Truncated);
    }
    // Do not hold on to a message-sized buffer between frames.
    if payload.capacity() > 2 * MAX_DATA_CHUNK && len <= MAX_DATA_CHUNK {
        payload.shrink_to(MAX_DATA_CHUNK);
    }
    Ok(k)
}

/// Fills `buf` from the socket unless the peer closes first; returns how many bytes were
/// read. Collects descriptors into `fds` (close-on-exec), at most `MAX_FDS`.
fn recv_exact(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, IpcError> {
    let mut filled = 0usize;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or_default();
        let mut iov = [io::IoSliceMut::new(rest)];
        let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(msg) => msg,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(map_errno(e)),
        };
        for cmsg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > MAX_FDS {
            return Err(IpcError::TooManyFds);
        }
        if msg.bytes == 0 {
            break;
        }
        filled += msg.bytes.min(buf.len() - filled);
    }
    Ok(filled)
}
