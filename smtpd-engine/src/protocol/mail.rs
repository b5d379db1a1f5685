//! MAIL FROM and RCPT TO: the envelope, ESMTP parameters (SIZE, BODY, SMTPUTF8, DSN),
//! the RCPT-time restriction lists, and recipient validation (`550 5.1.1` for unknown
//! local users, asking auth when the name is not an alias).

use super::command::{MailArgs, RcptArgs};
use super::policy::{self, Stage, Verdict};
use super::reject_log::RejectStage;
use super::reply::{Reply, common};
use super::{Action, LookupResult, Session, Transaction, Wait};
use postern_lib::address::{Address, Class, Path};
use postern_lib::dsn::Dsn;
use postern_lib::proto::cleanup::Recipient;

/// A recipient waiting for auth's answer.
#[derive(Debug)]
pub struct PendingRcpt {
    args: RcptArgs,
    addr: Address,
    class: Class,
}

impl Session {
    pub(super) fn mail(&mut self, m: MailArgs) {
        if self.helo.is_none() {
            return self.send(common::sequence("send HELO/EHLO first"));
        }
        if self.tls_required() {
            return self.send(Reply::new(530, Dsn::SECURITY, "Must issue a STARTTLS command first"));
        }
        if self.tx.is_some() {
            return self.send(common::sequence("nested MAIL command"));
        }
        if m.size.is_some_and(|s| s > self.cfg.message_size_limit) {
            let from = m.path.as_ref().map(|p| p.to_string()).unwrap_or_default();
            let r = Reply::new(552, Dsn::TOO_BIG, "Message size exceeds fixed limit");
            return self.reject(RejectStage::Mail, r, Some(&from), None);
        }
        if (m.smtputf8 || m.body.is_some() || m.ret.is_some() || m.envid.is_some() || m.size.is_some()) && !self.esmtp {
            return self.send(Reply::new(
                555,
                Dsn::INVALID_ARGUMENTS,
                "Unsupported option: ESMTP parameters need EHLO",
            ));
        }
        if let Some(minfree) = self.cfg.queue_minfree
            && let Some(free) = crate::space::queue_free()
            && !crate::space::enough(free, minfree, self.cfg.message_size_limit, m.size)
        {
            let from = m.path.as_ref().map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!("not enough free space in the queue file system: {free} bytes");
            let r = Reply::new(452, Dsn::SYSTEM_FULL, "Insufficient system storage");
            return self.reject(RejectStage::Mail, r, Some(&from), None);
        }
        self.tx = Some(Transaction {
            mail: m,
            ..Transaction::default()
        });
        self.send(Reply::new(250, Dsn::SENDER_OK, "Ok"));
    }

    pub(super) fn rcpt(&mut self, args: RcptArgs) {
        let Some(tx) = &self.tx else {
            return self.send(common::sequence("need MAIL command"));
        };
        if tx.recipients.len() >= self.cfg.recipient_limit {
            return self.send(Reply::new(452, Dsn::TOO_MANY_RECIPIENTS, "Error: too many recipients"));
        }
        if args.bare_postmaster {
            // RFC 5321 section 4.5.1: <postmaster> must always be accepted, and it means
            // this host's postmaster: qualified with a local domain, never sent away.
            let address = format!(
                "postmaster@{}",
                self.cfg.destinations.postmaster_domain(&self.cfg.hostname)
            );
            return self.add_rcpt(address, args);
        }
        let Path::Addr(addr) = args.path.clone() else {
            return self.send(common::syntax("RCPT TO:<address>"));
        };
        if addr.is_utf8() && !tx.mail.smtputf8 {
            return self.send(Reply::new(
                553,
                Dsn::NEEDS_SMTPUTF8,
                "Error: recipient address needs SMTPUTF8",
            ));
        }
        let class = self.cfg.destinations.classify(&addr);
        // First the lists without the look-up, so that a client the lists refuse learns
        // nothing about which mailboxes exist.
        if let Some(r) = self.rcpt_verdict(&addr, class, None) {
            return self.reject(RejectStage::Rcpt, r, None, Some(&addr.to_string()));
        }
        let needs_lookup = class == Class::Local && (self.cfg.reject_unlisted || self.cfg.restrictions.uses_unlisted());
        if !needs_lookup {
            return self.finish_rcpt(PendingRcpt { args, addr, class }, None);
        }
        let local = addr.local.to_lowercase();
        if local == "postmaster" || self.cfg.aliases.contains(&local) {
            return self.finish_rcpt(PendingRcpt { args, addr, class }, Some(LookupResult::Exists));
        }
        self.out.push(Action::Lookup(local));
        self.wait = Wait::Lookup(Box::new(PendingRcpt { args, addr, class }));
    }

    /// Evaluates the client, HELO, sender, relay and recipient lists for one recipient.
    fn rcpt_verdict(&self, addr: &Address, class: Class, known: Option<bool>) -> Option<Reply> {
        let facts = self.facts(Some((addr, class)), known);
        let r = &self.cfg.restrictions;
        let lists = [
            (&r.client, Stage::Client),
            (&r.helo, Stage::Helo),
            (&r.sender, Stage::Sender),
            (&r.relay, Stage::Recipient),
            (&r.recipient, Stage::Recipient),
        ];
        for (rules, stage) in lists {
            if let Verdict::Reject(reply) = policy::evaluate(rules, stage, &facts) {
                return Some(reply);
            }
        }
        None
    }

    pub(super) fn finish_rcpt(&mut self, p: PendingRcpt, lookup: Option<LookupResult>) {
        let known = match lookup {
            Some(LookupResult::TempFail) => {
                let r = Reply::new(451, Dsn::MAIL_SYSTEM, format!("<{}>: Temporary lookup failure", p.addr));
                return self.reject(RejectStage::Rcpt, r, None, Some(&p.addr.to_string()));
            }
            Some(LookupResult::Exists) => Some(true),
            Some(LookupResult::NoSuchUser) => Some(false),
            None => None,
        };
        if let Some(r) = self.rcpt_verdict(&p.addr, p.class, known) {
            return self.reject(RejectStage::Rcpt, r, None, Some(&p.addr.to_string()));
        }
        if self.cfg.reject_unlisted && known == Some(false) {
            let r = Reply::new(
                550,
                Dsn::BAD_MAILBOX,
                format!(
                    "<{}>: Recipient address rejected: User unknown in local recipient table",
                    p.addr
                ),
            );
            return self.reject(RejectStage::Rcpt, r, None, Some(&p.addr.to_string()));
        }
        self.add_rcpt(p.addr.to_string(), p.args);
    }

    fn add_rcpt(&mut self, address: String, args: RcptArgs) {
        if (!args.notify.is_empty() || args.orcpt.is_some()) && !self.esmtp {
            return self.send(Reply::new(
                555,
                Dsn::INVALID_ARGUMENTS,
                "Unsupported option: ESMTP parameters need EHLO",
            ));
        }
        let Some(tx) = self.tx.as_mut() else {
            return self.send(common::sequence("need MAIL command"));
        };
        tx.recipients.push(Recipient {
            address,
            orcpt: args.orcpt,
            notify: args.notify,
        });
        self.send(Reply::new(250, Dsn::RECIPIENT_OK, "Ok"));
    }
}
