//! The TRANSACTION state (RFC 1939): STAT, LIST, UIDL, RETR, TOP, DELE, NOOP, RSET, and
//! QUIT, which enters the UPDATE state and removes the messages marked by DELE.
//! Multi-line replies are dot-stuffed and end with `.`.

use crate::maildrop::Maildrop;
use crate::retrieve::Retrieval;
use crate::session::{Action, Session, State, err, ok};

fn number(arg: &str) -> Option<usize> {
    if arg.is_empty() || arg.len() > 9 || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    arg.parse().ok()
}

/// A command in the TRANSACTION state.
pub fn command(s: &mut Session, verb: &str, args: &[&str]) -> Vec<Action> {
    if verb == "QUIT" {
        return quit(s);
    }
    let State::Transaction(md) = &mut s.state else {
        return vec![err("Command not allowed now")];
    };
    let md: &mut Maildrop = md;
    match (verb, args) {
        ("STAT", []) => {
            let live = md.entries().iter().filter(|e| !e.deleted);
            let (n, size) = live.fold((0usize, 0u64), |(n, s), e| (n + 1, s + e.size));
            vec![ok(&format!("{n} {size}"))]
        }
        ("LIST", []) | ("UIDL", []) => {
            let uidl = verb == "UIDL";
            let mut text = String::from("+OK\r\n");
            for (i, e) in md.entries().iter().enumerate().filter(|(_, e)| !e.deleted) {
                if uidl {
                    text.push_str(&format!("{} {}\r\n", i + 1, e.uidl));
                } else {
                    text.push_str(&format!("{} {}\r\n", i + 1, e.size));
                }
            }
            text.push_str(".\r\n");
            vec![Action::Send(text.into_bytes())]
        }
        ("LIST", [n]) | ("UIDL", [n]) => match number(n).and_then(|n| md.get(n).map(|e| (n, e))) {
            Some((n, e)) if verb == "UIDL" => vec![ok(&format!("{n} {}", e.uidl))],
            Some((n, e)) => vec![ok(&format!("{n} {}", e.size))],
            None => vec![err("No such message")],
        },
        ("RETR", [n]) => match number(n) {
            Some(n) => send_message(md, n, None),
            None => vec![err("No such message")],
        },
        ("TOP", [n, lines]) => match (number(n), number(lines)) {
            (Some(n), Some(lines)) => send_message(md, n, Some(lines)),
            _ => vec![err("Usage: TOP msg lines")],
        },
        ("DELE", [n]) => match number(n) {
            Some(n) if md.delete(n) => vec![ok("Marked to be deleted")],
            _ => vec![err("No such message")],
        },
        ("NOOP", []) => vec![ok("")],
        ("RSET", []) => {
            md.reset();
            let n = md.entries().len();
            vec![ok(&format!("{n} messages"))]
        }
        ("STAT" | "NOOP" | "RSET" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE", _) => vec![err("Bad arguments")],
        ("USER" | "PASS" | "AUTH" | "STLS", _) => vec![err("Already logged in")],
        // RFC 6856: UTF8 is for the AUTHORIZATION state
        ("UTF8", _) => vec![err("UTF8 is allowed before login only")],
        _ => vec![err("Unknown command")],
    }
}

/// The `+OK` line, then the message streamed from its file as the client reads
/// ([`Retrieval`]).
fn send_message(md: &mut Maildrop, n: usize, top: Option<usize>) -> Vec<Action> {
    let file = match md.open_message(n) {
        Ok(Some(f)) => f,
        Ok(None) => return vec![err("No such message")],
        Err(e) => {
            tracing::warn!("read message {n}: {e}");
            return vec![err("[SYS/TEMP] Cannot read the message")];
        }
    };
    let size = md.get(n).map_or(0, |e| e.size);
    let first = match top {
        None => ok(&format!("{size} octets")),
        Some(_) => Action::Send(b"+OK\r\n".to_vec()),
    };
    let what = format!("message {n} ({})", md.get(n).map_or("", |e| e.uidl.as_str()));
    vec![first, Action::Stream(Box::new(Retrieval::new(file, top, what)))]
}

fn quit(s: &mut Session) -> Vec<Action> {
    let State::Transaction(md) = &mut s.state else {
        return vec![ok("Bye"), Action::Close];
    };
    let result = md.commit();
    let user = s.user.clone().unwrap_or_default();
    s.state = State::Done;
    match result {
        Ok(n) => {
            tracing::info!("logout: user={user}, deleted={n}");
            vec![ok(&format!("Bye ({n} messages deleted)")), Action::Close]
        }
        Err(e) => {
            tracing::warn!("update state: user={user}: {e}");
            vec![err("[SYS/TEMP] Some deleted messages were not removed"), Action::Close]
        }
    }
}

#[cfg(test)]
mod tests;
