//! THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §3), and the `* THREAD`
//! answer's nested lists. The hits of the THREAD's search come in a work slice at a time
//! ([`Threader::add`] keeps what each message's header says); [`Threader::finish`] then
//! builds the threads in one go. What each message's header says is kept for the next
//! THREAD or SORT of the folder ([`crate::sort_cache`]).
//!
//! Bounds against hostile headers (References chains with loops, thousands of ids):
//! a message's Message-ID, In-Reply-To and References are read from at most the first
//! [`crate::cmd_search::MAX_SEARCH_HEADER`] of its header; at most the last
//! [`MAX_REFS`] references of a message are used, and once a THREAD holds
//! [`MAX_TOTAL_REFS`] of them only each message's last (its parent); ids are kept as
//! 64-bit keyed hashes (SipHash with a per-process random key, [`crate::sort_cache::hasher`]), so memory does not grow
//! with the ids' length. Step 1 runs as each message comes (so within the search's work
//! slices); its loop check walks up parent links at most [`MAX_WALK`] steps in all per
//! THREAD (past it, a link that would need a walk is not made, as if it made a loop).
//! Steps 2 to 6 run at once at the end, iteratively (no recursion, whatever the thread
//! depth), in `O(n log n)`.
//!
//! Time, for `n` messages and `r` references kept: step 1 is `O(n + r)` plus at most
//! [`MAX_WALK`] parent steps, the rest `O((n + r) log n)`; never quadratic, whatever
//! the chains. Measured (unit test `long_chains_loops_and_walks_stay_within_the_bounds`,
//! debug build): a 10,000-message chain walked whole 2,500 times (the budget spent,
//! 500 links refused) threads 15,000 messages in 0.8 s; a 5,000-hop References chain
//! looping through itself links only its last 64 ids. Release build: under 16 ms for
//! 10,000 ordinary messages (BENCHMARKS.md has THREAD beside Dovecot).
//!
//! Memory, per message: 40 bytes (`Msg`) plus its subject's collation key, one node
//! (64 bytes, and 8 in its parent's list of children) and an index entry (16 bytes and
//! the hash table's slack) for its Message-ID and each reference kept; references
//! beyond the first [`MAX_TOTAL_REFS`] of a THREAD cost at most one node per message.
//! So a THREAD over a million messages holds at most about 1 M × (40 + 90) B + 1 M
//! references × 90 B + the subject keys ≈ 220 MB + subjects, and the ids themselves
//! never (they are hashed as they are read).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// References used per message (the last ones: the nearest ancestors).
pub const MAX_REFS: usize = 64;
/// References kept for one THREAD before messages keep only their parent reference.
pub const MAX_TOTAL_REFS: usize = 1_000_000;
/// Parent-link steps the loop checks of one THREAD may take.
pub const MAX_WALK: u64 = 20_000_000;

/// The threading algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// ORDEREDSUBJECT.
    OrderedSubject,
    /// REFERENCES.
    References,
}

impl Algorithm {
    /// From the command's argument; `None` for one not offered.
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name.to_ascii_uppercase().as_str() {
            "ORDEREDSUBJECT" => Some(Algorithm::OrderedSubject),
            "REFERENCES" => Some(Algorithm::References),
            _ => None,
        }
    }
}

/// What threading needs of one message.
struct Msg {
    /// The number the answer names it by.
    id: u32,
    sent: i64,
    subject: Vec<u8>,
    reply: bool,
}

/// Collects the hits of a THREAD and threads them.
pub struct Threader {
    algorithm: Algorithm,
    msgs: Vec<Msg>,
    /// The folder's cached keys ([`crate::sort_cache`]), once bound.
    cache: Option<crate::sort_cache::Shared>,
    total_refs: usize,
    /// REFERENCES step 1, done as the messages come (a work slice at a time).
    linker: Linker,
}

impl Threader {
    /// A threader for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Threader {
        Threader {
            algorithm,
            msgs: Vec::new(),
            cache: None,
            total_refs: 0,
            linker: Linker::default(),
        }
    }

    /// Uses (and fills) the cached keys of the folder threaded.
    pub fn bind(&mut self, folder: &postern_mailbox::folder::Folder) {
        self.cache = crate::sort_cache::bind(folder);
    }

    /// Whether [`Threader::add`] needs message `uid`'s header (not when its keys are
    /// cached).
    pub fn needs_header_of(&self, uid: u32) -> bool {
        self.cache.as_ref().is_none_or(|c| c.borrow().get(uid).is_none())
    }

    /// Adds a hit, in ascending mailbox order: `id` is what the answer names it by,
    /// `uid` its UID, `header` its header (empty when [`Threader::needs_header_of`]
    /// said it is not needed).
    pub fn add(&mut self, id: u32, uid: u32, header: &[u8], internal_date: i64) {
        let k = crate::sort_cache::keys_of(self.cache.as_ref(), uid, header, internal_date);
        let sent = k.sent;
        let (subject, reply) = (k.subject.clone(), k.reply);
        let msgid = k.msgid;
        let mut refs = match self.algorithm {
            Algorithm::References => k.refs.clone(),
            Algorithm::OrderedSubject => Vec::new(),
        };
        if self.total_refs + refs.len() > MAX_TOTAL_REFS {
            let keep = refs.len().saturating_sub(1);
            refs.drain(..keep);
        }
        self.total_refs += refs.len();
        if self.algorithm == Algorithm::References {
            self.linker.add(self.msgs.len(), msgid, &refs);
        }
        self.msgs.push(Msg {
            id,
            sent,
            subject,
            reply,
        });
    }

    /// The `* THREAD` line's data (without `* THREAD`): the threads, each in
    /// parentheses.
    pub fn finish(self) -> String {
        let forest = match self.algorithm {
            Algorithm::OrderedSubject => ordered_subject(&self.msgs),
            Algorithm::References => references(self.linker, &self.msgs),
        };
        forest.format(&self.msgs)
    }
}

/// The msg-ids (`<left@right>`, without the brackets and any white space in them) in a
/// field value, skipping comments; ones without `@` are not valid and skipped.
/// A header's hashed Message-ID and references: the last [`MAX_REFS`] of References,
/// or In-Reply-To's first id when there are none.
pub(crate) fn thread_ids(header: &[u8], hasher: &RandomState) -> (Option<u64>, Vec<u64>) {
    let ids = crate::mime::header_fields(header, &["Message-ID", "References", "In-Reply-To"], false);
    let fields = crate::mime::fields(&ids);
    let hash = |id: &[u8]| hasher.hash_one(id);
    let msgid = crate::mime::field(&fields, "Message-ID").and_then(|v| msg_ids(v).next().map(hash));
    let mut refs = Vec::new();
    if let Some(v) = crate::mime::field(&fields, "References") {
        let all: Vec<&[u8]> = msg_ids(v).collect();
        refs = all[all.len().saturating_sub(MAX_REFS)..]
            .iter()
            .map(|id| hash(id))
            .collect();
    }
    if refs.is_empty() {
        refs.extend(crate::mime::field(&fields, "In-Reply-To").and_then(|v| msg_ids(v).next().map(hash)));
    }
    (msgid, refs)
}

fn msg_ids(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < v.len() {
            match v[i] {
                b'(' => {
                    // a comment, nested, with quoted pairs
                    let mut depth = 0usize;
                    while i < v.len() {
                        match v[i] {
                            b'\\' => i += 1,
                            b'(' => depth += 1,
                            b')' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                    i += 1;
                }
                b'<' => {
                    let start = i + 1;
                    let end = v[start..]
                        .iter()
                        .position(|&b| b == b'>' || b == b'<')
                        .map(|p| start + p);
                    match end {
                        Some(e) if v[e] == b'>' => {
                            i = e + 1;
                            let id = trim(&v[start..e]);
                            if id.contains(&b'@') && !id.iter().any(|b| b.is_ascii_whitespace()) {
                                return Some(id);
                            }
                        }
                        Some(e) => i = e,
                        None => i = v.len(),
                    }
                }
                _ => i += 1,
            }
        }
        None
    })
}

fn trim(s: &[u8]) -> &[u8] {
    let a = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let b = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(a, |i| i + 1);
    &s[a..b.max(a)]
}

/// A node of the thread forest: a message (an index into the messages) or a dummy.
#[derive(Default, Clone)]
struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
    /// Children counted while only parent links exist (step 1).
    nchildren: u32,
}

/// Nodes and the top-level list.
struct Forest {
    nodes: Vec<Node>,
    roots: Vec<usize>,
}

impl Forest {
    /// The (sent date, id) a node sorts by: its message's, or a dummy's first child's.
    fn sort_key(&self, msgs: &[Msg], n: usize) -> (i64, u32) {
        let mut n = n;
        loop {
            match self.nodes[n].msg {
                Some(m) => return (msgs[m].sent, msgs[m].id),
                None => match self.nodes[n].children.first() {
                    Some(&c) => n = c,
                    None => return (i64::MIN, 0),
                },
            }
        }
    }

    fn sort_children(&mut self, msgs: &[Msg], n: Option<usize>) {
        let mut list = match n {
            Some(n) => std::mem::take(&mut self.nodes[n].children),
            None => std::mem::take(&mut self.roots),
        };
        list.sort_by_key(|&c| self.sort_key(msgs, c));
        match n {
            Some(n) => self.nodes[n].children = list,
            None => self.roots = list,
        }
    }

    /// Sorts every set of siblings by sent date, the deepest first (dummies, which are
    /// top-level only, sort by their first child).
    fn sort_all(&mut self, msgs: &[Msg]) {
        for n in 0..self.nodes.len() {
            if self.nodes[n].msg.is_some() && self.nodes[n].children.len() > 1 {
                self.sort_children(msgs, Some(n));
            }
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].msg.is_none() && self.nodes[n].children.len() > 1 {
                self.sort_children(msgs, Some(n));
            }
        }
        self.sort_children(msgs, None);
    }

    /// `(1 2 (3)(4 5))(6)`, iteratively: a node is followed by its only child, or by each
    /// of its children in parentheses.
    fn format(&self, msgs: &[Msg]) -> String {
        enum Tok {
            Open,
            Close,
            Node(usize),
        }
        let mut out = String::new();
        let mut last_num = false;
        let mut stack: Vec<Tok> = Vec::new();
        for &r in self.roots.iter().rev() {
            stack.extend([Tok::Close, Tok::Node(r), Tok::Open]);
        }
        while let Some(t) = stack.pop() {
            match t {
                Tok::Open => {
                    if last_num {
                        out.push(' ');
                    }
                    out.push('(');
                    last_num = false;
                }
                Tok::Close => {
                    out.push(')');
                    last_num = false;
                }
                Tok::Node(n) => {
                    let node = &self.nodes[n];
                    if let Some(m) = node.msg {
                        if last_num {
                            out.push(' ');
                        }
                        out.push_str(&msgs[m].id.to_string());
                        last_num = true;
                    }
                    match node.children.as_slice() {
                        [] => {}
                        [only] if node.msg.is_some() => stack.push(Tok::Node(*only)),
                        kids => {
                            for &c in kids.iter().rev() {
                                stack.extend([Tok::Close, Tok::Node(c), Tok::Open]);
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// ORDEREDSUBJECT: messages grouped by base subject (sorted by it, then by sent date);
/// each group's first message is the parent of the others; groups in order of their
/// first message's sent date.
fn ordered_subject(msgs: &[Msg]) -> Forest {
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by(|&a, &b| {
        (&msgs[a].subject, msgs[a].sent, msgs[a].id).cmp(&(&msgs[b].subject, msgs[b].sent, msgs[b].id))
    });
    let mut nodes: Vec<Node> = (0..msgs.len())
        .map(|m| Node {
            msg: Some(m),
            ..Node::default()
        })
        .collect();
    let mut roots = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let head = order[i];
        let mut j = i + 1;
        while j < order.len() && msgs[order[j]].subject == msgs[head].subject {
            nodes[head].children.push(order[j]);
            j += 1;
        }
        roots.push(head);
        i = j;
    }
    let mut f = Forest { nodes, roots };
    f.sort_children(msgs, None);
    f
}

/// REFERENCES step 1 (RFC 5256 §3): the nodes by message id and their parent links.
#[derive(Default)]
struct Linker {
    nodes: Vec<Node>,
    by_id: HashMap<u64, usize>,
    /// What the loop checks may still walk ([`MAX_WALK`]).
    walked: u64,
}

impl Linker {
    fn node_of(&mut self, id: u64) -> usize {
        let nodes = &mut self.nodes;
        *self.by_id.entry(id).or_insert_with(|| {
            nodes.push(Node::default());
            nodes.len() - 1
        })
    }

    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    /// Step 1 for message `m` (messages come in mailbox order).
    fn add(&mut self, m: usize, msgid: Option<u64>, refs: &[u64]) {
        // a message's own node: by its Message-ID unless a message before it has that
        // id, or it has none (then a node of its own)
        let own = match msgid {
            Some(id) => {
                let n = self.node_of(id);
                if self.nodes[n].msg.is_none() {
                    n
                } else {
                    self.new_node()
                }
            }
            None => self.new_node(),
        };
        self.nodes[own].msg = Some(m);
        let mut budget = MAX_WALK.saturating_sub(self.walked);
        let before = budget;
        // 1A: the references linked in order, where a node has no parent yet
        let chain: Vec<usize> = refs.iter().map(|&r| self.node_of(r)).collect();
        let nodes = &mut self.nodes;
        for w in chain.windows(2) {
            if nodes[w[1]].parent.is_none() && !makes_loop(nodes, w[0], w[1], &mut budget) {
                link(nodes, w[0], w[1]);
            }
        }
        // 1B: the last reference is the parent, replacing any parent it had
        if let Some(old) = nodes[own].parent.take() {
            nodes[old].nchildren -= 1;
        }
        if let Some(&p) = chain.last()
            && !makes_loop(nodes, p, own, &mut budget)
        {
            link(nodes, p, own);
        }
        self.walked += before - budget;
    }
}

/// REFERENCES, RFC 5256 §3 steps 2 to 6, after step 1 ([`Linker`]).
fn references(linker: Linker, msgs: &[Msg]) -> Forest {
    let mut nodes = linker.nodes;
    // the children lists, from the parent links
    for n in 0..nodes.len() {
        if let Some(p) = nodes[n].parent {
            nodes[p].children.push(n);
        }
    }
    // step 2: the nodes without a parent are the root's children
    let roots: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].parent.is_none()).collect();
    let mut f = Forest { nodes, roots };
    // step 3: prune dummies
    let top = std::mem::take(&mut f.roots);
    f.roots = f.prune_level(top, true);
    let mut work: Vec<usize> = f.roots.clone();
    while let Some(n) = work.pop() {
        let kids = std::mem::take(&mut f.nodes[n].children);
        let kids = f.prune_level(kids, false);
        work.extend(&kids);
        f.nodes[n].children = kids;
    }
    // step 4: the top level by sent date (a dummy by its first child, its children
    // sorted first)
    for &r in &f.roots.clone() {
        if f.nodes[r].msg.is_none() {
            f.sort_children(msgs, Some(r));
        }
    }
    f.sort_children(msgs, None);
    // step 5: threads with the same base subject merged
    f.merge_subjects(msgs);
    // step 6
    f.sort_all(msgs);
    f
}

fn link(nodes: &mut [Node], parent: usize, child: usize) {
    nodes[child].parent = Some(parent);
    nodes[parent].nchildren += 1;
}

/// Whether making `child` a child of `parent` would make a loop (`child` is `parent` or
/// one of its ancestors). A child without children is no one's ancestor; otherwise the
/// walk up from `parent` takes from `budget`, and an exhausted budget counts as a loop.
fn makes_loop(nodes: &[Node], parent: usize, child: usize, budget: &mut u64) -> bool {
    if parent == child {
        return true;
    }
    if nodes[child].nchildren == 0 {
        return false;
    }
    let mut n = parent;
    while let Some(p) = nodes[n].parent {
        if *budget == 0 {
            return true;
        }
        *budget -= 1;
        if p == child {
            return true;
        }
        n = p;
    }
    false
}

impl Forest {
    /// Step 3 at one level: dummies without children go, dummies with children give
    /// their place to them (at the top level only when there is one child); children so
    /// promoted are looked at in turn.
    fn prune_level(&mut self, list: Vec<usize>, top: bool) -> Vec<usize> {
        let mut out = Vec::with_capacity(list.len());
        let mut queue: std::collections::VecDeque<usize> = list.into();
        while let Some(n) = queue.pop_front() {
            if self.nodes[n].msg.is_some() {
                out.push(n);
                continue;
            }
            let kids = &self.nodes[n].children;
            if kids.is_empty() {
                continue;
            }
            if top && kids.len() > 1 {
                out.push(n);
                continue;
            }
            let kids = std::mem::take(&mut self.nodes[n].children);
            for &k in kids.iter().rev() {
                self.nodes[k].parent = self.nodes[n].parent;
                queue.push_front(k);
            }
        }
        out
    }

    /// The thread subject of a top-level node: its message's base subject, or its first
    /// child's for a dummy.
    fn subject_msg(&self, n: usize) -> Option<usize> {
        match self.nodes[n].msg {
            Some(m) => Some(m),
            None => self.nodes[n].children.first().and_then(|&c| self.nodes[c].msg),
        }
    }

    /// Step 5.
    fn merge_subjects(&mut self, msgs: &[Msg]) {
        let dummy = |f: &Forest, n: usize| f.nodes[n].msg.is_none();
        let reply = |f: &Forest, n: usize| f.nodes[n].msg.is_some_and(|m| msgs[m].reply);
        // B: one node per subject
        let mut table: HashMap<&[u8], usize> = HashMap::new();
        for &n in &self.roots {
            let Some(m) = self.subject_msg(n) else { continue };
            let subject = msgs[m].subject.as_slice();
            if subject.is_empty() {
                continue;
            }
            match table.get(subject) {
                None => {
                    table.insert(subject, n);
                }
                Some(&t) => {
                    if !dummy(self, t) && (dummy(self, n) || (reply(self, t) && !reply(self, n))) {
                        table.insert(subject, n);
                    }
                }
            }
        }
        // C: merge the others into it
        let roots = self.roots.clone();
        let mut gone = vec![false; self.nodes.len()];
        let mut replaced: HashMap<usize, usize> = HashMap::new();
        for &n in &roots {
            let Some(m) = self.subject_msg(n) else { continue };
            let subject = msgs[m].subject.as_slice();
            if subject.is_empty() {
                continue;
            }
            let t = table[subject];
            if t == n {
                continue;
            }
            if dummy(self, t) && dummy(self, n) {
                let kids = std::mem::take(&mut self.nodes[n].children);
                for &k in &kids {
                    self.nodes[k].parent = Some(t);
                }
                self.nodes[t].children.extend(kids);
                gone[n] = true;
            } else if dummy(self, t) || (reply(self, n) && !reply(self, t)) {
                self.nodes[n].parent = Some(t);
                self.nodes[t].children.push(n);
                gone[n] = true;
            } else {
                let d = self.nodes.len();
                self.nodes.push(Node {
                    msg: None,
                    parent: None,
                    children: vec![t, n],
                    nchildren: 0,
                });
                gone.push(false);
                self.nodes[t].parent = Some(d);
                self.nodes[n].parent = Some(d);
                gone[n] = true;
                // the dummy takes t's place at the top level
                replaced.insert(t, d);
                gone[t] = true;
                table.insert(subject, d);
            }
        }
        let mut new_roots = Vec::with_capacity(self.roots.len());
        for &n in &roots {
            if let Some(&d) = replaced.get(&n) {
                new_roots.push(d);
            } else if !gone[n] {
                new_roots.push(n);
            }
        }
        self.roots = new_roots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (header, internal date) per message, ids 1, 2, ...
    fn thread(alg: Algorithm, msgs: &[&str]) -> String {
        let mut t = Threader::new(alg);
        for (i, m) in msgs.iter().enumerate() {
            t.add(
                i as u32 + 1,
                i as u32 + 1,
                format!("{m}\r\n\r\n").as_bytes(),
                1_000_000 + i as i64,
            );
        }
        t.finish()
    }

    #[test]
    fn msg_ids_skip_comments_and_invalid_ones() {
        let ids: Vec<&[u8]> = msg_ids(b"<a@b> (comment <x@y>) <no-at> < c@d >\r\n <e@f>").collect();
        assert_eq!(ids, [&b"a@b"[..], b"c@d", b"e@f"]);
        assert_eq!(msg_ids(b"(unclosed <a@b>").count(), 0);
        assert_eq!(msg_ids(b"<<a@b>").collect::<Vec<_>>(), [&b"a@b"[..]]);
    }

    #[test]
    fn references_chains_breaks_loops_and_duplicates() {
        let m = |id: &str, refs: &str, subj: &str| {
            let mut h = format!("Subject: {subj}");
            if !id.is_empty() {
                h.push_str(&format!("\r\nMessage-ID: <{id}>"));
            }
            if !refs.is_empty() {
                h.push_str(&format!("\r\nReferences: {refs}"));
            }
            h
        };
        let msgs = [
            m("1@x", "", "first"),
            m("2@x", "<1@x>", "Re: first"),
            m("3@x", "<1@x> <2@x>", "Re: first"),
            m("4@x", "<1@x>", "Re: first"),
            // a reply to a message not here: a dummy parent, pruned
            m("5@x", "<gone@x>", "other"),
            // loop: 6 says 7 is its parent, 7 says 6 is: the first link stays
            m("6@x", "<7@x>", "loop"),
            m("7@x", "<6@x>", "loop"),
            // duplicate Message-ID: the second is a message of its own
            m("1@x", "", "dup"),
        ];
        let refs: Vec<&str> = msgs.iter().map(String::as_str).collect();
        assert_eq!(thread(Algorithm::References, &refs), "(1 (2 3)(4))(5)(7 6)(8)");
        // ORDEREDSUBJECT: by base subject, then date
        assert_eq!(thread(Algorithm::OrderedSubject, &refs), "(1 (2)(3)(4))(5)(6 7)(8)");
    }

    #[test]
    fn references_merges_subjects_and_keeps_dummies_of_siblings() {
        let msgs = [
            // two replies to a missing message: a dummy with two children, top level
            "Subject: Re: lost\r\nMessage-ID: <a@x>\r\nReferences: <root@x>",
            "Subject: Re: lost\r\nMessage-ID: <b@x>\r\nReferences: <root@x>",
            // same subject, no references: merged as the reply is joined to it
            "Subject: topic\r\nMessage-ID: <c@x>",
            "Subject: Re: topic\r\nMessage-ID: <d@x>",
            // two originals with one subject: a new dummy holds both
            "Subject: same\r\nMessage-ID: <e@x>",
            "Subject: same\r\nMessage-ID: <f@x>",
        ];
        assert_eq!(thread(Algorithm::References, &msgs), "((1)(2))(3 4)((5)(6))");
    }

    #[test]
    fn thread_formats_like_rfc_5256() {
        let msgs = [
            "Message-ID: <3@x>",
            "Message-ID: <6@x>\r\nReferences: <3@x>",
            "Message-ID: <4@x>\r\nReferences: <3@x> <6@x>",
            "Message-ID: <23@x>\r\nReferences: <3@x> <6@x> <4@x>",
            "Message-ID: <44@x>\r\nReferences: <3@x> <6@x>",
            "Message-ID: <7@x>\r\nReferences: <44@x>",
            "Message-ID: <96@x>\r\nIn-Reply-To: <7@x>",
        ];
        assert_eq!(thread(Algorithm::References, &msgs), "(1 2 (3 4)(5 6 7))");
    }

    #[test]
    fn random_headers_never_panic_and_every_message_is_threaded_once() {
        let mut x: u32 = 7;
        let mut next = || {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            (x >> 16) as usize
        };
        let pieces: [&str; 14] = [
            "<a@x>", "<b@x>", "<c@x>", " ", "(", ")", "\\", "<", ">", "Re:", "[t]", "Fwd:", "(fwd)", "@",
        ];
        for round in 0..200 {
            let n = 1 + next() % 12;
            let headers: Vec<String> = (0..n)
                .map(|_| {
                    let mut field = |name: &str| {
                        let v: String = (0..next() % 8).map(|_| pieces[next() % pieces.len()]).collect();
                        format!("{name}: {v}")
                    };
                    [
                        field("Message-ID"),
                        field("References"),
                        field("In-Reply-To"),
                        field("Subject"),
                    ]
                    .join("\r\n")
                })
                .collect();
            for alg in [Algorithm::References, Algorithm::OrderedSubject] {
                let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
                let out = thread(alg, &refs);
                let mut seen: Vec<u32> = out
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect();
                seen.sort_unstable();
                assert_eq!(
                    seen,
                    (1..=n as u32).collect::<Vec<_>>(),
                    "round {round} {alg:?}: {out} {headers:?}"
                );
                assert_eq!(out.matches('(').count(), out.matches(')').count());
            }
        }
    }

    /// The message numbers in a THREAD answer, sorted.
    fn numbers(out: &str) -> Vec<u32> {
        let mut seen: Vec<u32> = out
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        seen.sort_unstable();
        seen
    }

    /// How many threads (top-level lists) an answer holds.
    fn top_level(out: &str) -> usize {
        let mut depth = 0;
        let mut count = 0;
        for c in out.chars() {
            match c {
                '(' => {
                    if depth == 0 {
                        count += 1;
                    }
                    depth += 1;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        count
    }

    #[test]
    fn long_chains_loops_and_walks_stay_within_the_bounds() {
        // one message whose References is a 5,000-hop chain that loops back through
        // itself and repeats ids: only the last MAX_REFS are linked, no loop is made
        let ids: Vec<String> = (0..5000).map(|i| format!("<h{}@x>", i % 4000)).collect();
        let msgs = [
            "Message-ID: <h0@x>".to_string(),
            format!("Message-ID: <h3999@x>\r\nReferences: {} <h3999@x>", ids.join(" ")),
            "Message-ID: <h3998@x>\r\nIn-Reply-To: <h3999@x>".to_string(),
        ];
        let refs: Vec<&str> = msgs.iter().map(String::as_str).collect();
        // 2 names itself last: no parent (a loop); the chain's other ids are dummies,
        // pruned; 3 answers 2
        assert_eq!(thread(Algorithm::References, &refs), "(1)(2 3)");

        // the walk budget: 2,500 replies to missing ids, a 5,000-message chain, then
        // 2,500 messages with those ids answering the chain's end: each loop check walks
        // the whole chain (12.5 M steps, within MAX_WALK); twice the chain would pass it
        for (chain, replies) in [(5000usize, 2500usize), (10_000, 2500)] {
            let mut headers = Vec::new();
            for k in 0..replies {
                headers.push(format!("Message-ID: <q{k}@x>\r\nIn-Reply-To: <p{k}@x>"));
            }
            for i in 0..chain {
                headers.push(match i {
                    0 => "Message-ID: <c0@x>".to_string(),
                    _ => format!("Message-ID: <c{i}@x>\r\nIn-Reply-To: <c{}@x>", i - 1),
                });
            }
            for k in 0..replies {
                headers.push(format!("Message-ID: <p{k}@x>\r\nIn-Reply-To: <c{}@x>", chain - 1));
            }
            let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
            let started = std::time::Instant::now();
            let out = thread(Algorithm::References, &refs);
            let took = started.elapsed();
            eprintln!("chain {chain}, {replies} walks of it: {took:?}");
            assert!(took < std::time::Duration::from_secs(5), "{took:?}");
            let n = (2 * replies + chain) as u32;
            assert_eq!(numbers(&out), (1..=n).collect::<Vec<_>>());
            // within the budget every p is linked under the chain's end (one thread);
            // past it, the links a walk would need are refused and those replies stay
            // threads of their own
            let threads = top_level(&out);
            if chain == 5000 {
                assert_eq!(threads, 1);
            } else {
                let walks = (MAX_WALK / chain as u64) as usize;
                assert_eq!(threads, 1 + replies - walks, "{}", &out[out.len() - 200..]);
            }
        }
    }

    #[test]
    fn memory_per_message_is_as_the_crate_doc_says() {
        // the crate doc's figures: a node, a message (its collation key aside), an
        // index entry (key and node number; the table's own overhead aside)
        assert_eq!(std::mem::size_of::<Node>(), 64);
        assert_eq!(std::mem::size_of::<Msg>(), 40);
        assert_eq!(std::mem::size_of::<(u64, usize)>(), 16);
    }

    #[test]
    fn hostile_reference_chains_are_bounded() {
        // 3,000 messages, each referencing every earlier one and a cycle back to the last
        let n = 3000;
        let ids: Vec<String> = (0..n).map(|i| format!("<m{i}@x>")).collect();
        let headers: Vec<String> = (0..n)
            .map(|i| {
                let mut refs: Vec<&str> = ids[..i].iter().map(String::as_str).collect();
                refs.push(&ids[n - 1]);
                format!("Message-ID: {}\r\nReferences: {}", ids[i], refs.join(" "))
            })
            .collect();
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let out = thread(Algorithm::References, &refs);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(out.starts_with('(') && out.ends_with(')'));
        // every message appears exactly once
        let mut seen: Vec<u32> = out
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (1..=n as u32).collect::<Vec<_>>());
        // a deep chain is formatted without recursion
        let headers: Vec<String> = (0..20_000)
            .map(|i| match i {
                0 => "Message-ID: <c0@x>".to_string(),
                _ => format!("Message-ID: <c{i}@x>\r\nIn-Reply-To: <c{}@x>", i - 1),
            })
            .collect();
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let out = thread(Algorithm::References, &refs);
        assert_eq!(
            out.len(),
            (1..=20_000).map(|i: u32| i.to_string().len() + 1).sum::<usize>() + 1
        );
    }
}
