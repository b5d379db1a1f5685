//! Base-subject extraction (RFC 5256 §2.1), for SORT SUBJECT and both THREAD algorithms:
//! `Re: [list] Fwd: subject (fwd)` is `subject`, and a reply or forward. The input is the
//! Subject already decoded from RFC 2047 encoded words (step 1's first half); the steps
//! work on bytes, cutting only at ASCII characters, so UTF-8 text stays whole.
//!
//! The grammar of the RFC, matched case-insensitively:
//! ```text
//! subj-trailer = "(fwd)" / WSP
//! subj-leader  = (*subj-blob subj-refwd) / WSP
//! subj-blob    = "[" *BLOBCHAR "]" *WSP
//! subj-refwd   = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
//! subj-fwd-hdr = "[fwd:"   subj-fwd-trl = "]"
//! ```
//! Linear in the subject's length times the number of prefixes removed; a subject is at
//! most a header field (bounded by the header limits of the caller).

/// The base subject of a decoded Subject, and whether it is a reply or forward (a
/// `subj-refwd`, a `(fwd)` trailer or a `[fwd: ...]` wrapper was removed: RFC 5256's
/// test in THREAD=REFERENCES step 5).
pub fn base_subject(subject: &str) -> (String, bool) {
    // step 1: tabs and line breaks become spaces, runs of spaces one space
    let mut t: Vec<u8> = Vec::with_capacity(subject.len());
    for &b in subject.as_bytes() {
        let b = if matches!(b, b'\t' | b'\r' | b'\n') { b' ' } else { b };
        if b == b' ' && t.last() == Some(&b' ') {
            continue;
        }
        t.push(b);
    }
    let mut reply = false;
    let mut s: &[u8] = &t;
    loop {
        // step 2: trailers
        loop {
            if s.last() == Some(&b' ') {
                s = &s[..s.len() - 1];
            } else if s.len() >= 5 && s[s.len() - 5..].eq_ignore_ascii_case(b"(fwd)") {
                s = &s[..s.len() - 5];
                reply = true;
            } else {
                break;
            }
        }
        // step 5: steps 3 and 4 until neither removes anything
        loop {
            let mut changed = false;
            // step 3: leaders
            loop {
                if s.first() == Some(&b' ') {
                    s = &s[1..];
                } else if let Some(n) = leader(s) {
                    s = &s[n..];
                    reply = true;
                } else {
                    break;
                }
                changed = true;
            }
            // step 4: a blob, when something is left after it (there is no trailing
            // white space: step 2 removed it). Blobs that follow are removed in the same
            // pass: step 3 found no leader in the longer text, so it finds none in a
            // suffix starting at a blob boundary of it (this keeps `[a][a]...` linear).
            while let Some(n) = blob(s)
                && n < s.len()
            {
                s = &s[n..];
                changed = true;
            }
            if !changed {
                break;
            }
        }
        // step 6: a "[fwd: ...]" wrapper, then again from step 2
        if s.len() >= 6 && s[..5].eq_ignore_ascii_case(b"[fwd:") && s.last() == Some(&b']') {
            s = &s[5..s.len() - 1];
            reply = true;
            continue;
        }
        break;
    }
    (String::from_utf8_lossy(s).into_owned(), reply)
}

/// Length of a `subj-blob` at the start of `s`.
fn blob(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'[') {
        return None;
    }
    let close = s[1..].iter().position(|&b| b == b']' || b == b'[' || b == 0)? + 1;
    if s[close] != b']' {
        return None;
    }
    let mut n = close + 1;
    while s.get(n) == Some(&b' ') {
        n += 1;
    }
    Some(n)
}

/// Length of a `*subj-blob subj-refwd` at the start of `s`.
fn leader(s: &[u8]) -> Option<usize> {
    let mut n = 0;
    loop {
        if let Some(r) = refwd(&s[n..]) {
            return Some(n + r);
        }
        n += blob(&s[n..])?;
    }
}

/// Length of a `subj-refwd` at the start of `s`.
fn refwd(s: &[u8]) -> Option<usize> {
    let starts = |p: &[u8]| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p);
    // "fw" ["d"]: with the "d" first, then without (the rest must still match)
    let words: &[usize] = if starts(b"re") {
        &[2]
    } else if starts(b"fwd") {
        &[3, 2]
    } else if starts(b"fw") {
        &[2]
    } else {
        return None;
    };
    for &w in words {
        let mut n = w;
        while s.get(n) == Some(&b' ') {
            n += 1;
        }
        if let Some(b) = blob(&s[n..])
            && s.get(n + b) == Some(&b':')
        {
            return Some(n + b + 1);
        }
        if s.get(n) == Some(&b':') {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::base_subject;

    fn base(s: &str) -> &'static str {
        Box::leak(base_subject(s).0.into_boxed_str())
    }

    #[test]
    fn rfc_5256_leaders_trailers_and_wrappers() {
        assert_eq!(base_subject("Re: [list] Fwd: subject (fwd)"), ("subject".into(), true));
        assert_eq!(
            base_subject("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)"),
            ("b".into(), true)
        );
        assert_eq!(base_subject("Re: [FWD: c]"), ("c".into(), true));
        assert_eq!(base_subject("[xyz]"), ("[xyz]".into(), false), "a blob alone stays");
        assert_eq!(
            base_subject("[list] subject"),
            ("subject".into(), false),
            "a blob is no reply"
        );
        assert_eq!(base_subject("b (a)"), ("b (a)".into(), false));
        assert_eq!(base_subject(""), (String::new(), false));
        assert_eq!(base_subject("Re:"), (String::new(), true));
        assert_eq!(base("RE:RE:  re :x"), "x");
        assert_eq!(base("Re [tag]: hello"), "hello");
        assert_eq!(base("Fwd:\tTabs\t\tand  spaces "), "Tabs and spaces");
        assert_eq!(base("Rex: not a reply"), "Rex: not a reply");
        assert_eq!(base("Fw: Fwd: FWD: x"), "x");
        assert_eq!(base("[fwd: [fwd: inner (fwd)]]"), "inner");
        assert_eq!(base("[a] [b] text"), "text");
        assert_eq!(base("[a] [b]"), "[b]", "the last blob is the subject");
        assert_eq!(base("Re: Grüße aus Köln"), "Grüße aus Köln");
        assert_eq!(base("[unclosed subject"), "[unclosed subject");
    }

    #[test]
    fn hostile_subjects_take_linear_steps() {
        let s = "Re: [x] ".repeat(20_000) + "end";
        let started = std::time::Instant::now();
        assert_eq!(base(&s), "end");
        let s = "[".repeat(100_000);
        assert_eq!(base(&s), s);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
