use std::io::{self, Read};

use proptest::prelude::*;

use super::*;

/// A reader that returns at most `step` bytes per call, and optionally an error once.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
    fail_at: Option<(usize, io::ErrorKind)>,
}

impl Trickle {
    fn new(data: &[u8], step: usize) -> Self {
        Self {
            data: data.to_vec(),
            pos: 0,
            step: step.max(1),
            fail_at: None,
        }
    }
}

impl Read for Trickle {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some((at, kind)) = self.fail_at
            && self.pos >= at
        {
            self.fail_at = None;
            return Err(io::Error::from(kind));
        }
        let n = self.step.min(out.len()).min(self.data.len() - self.pos);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Line(Vec<u8>, LineEnding),
    TooLong,
    Truncated(Vec<u8>),
    Eof,
}

fn read_all_lines<R: Read>(r: &mut LineReader<R>) -> Vec<Ev> {
    let mut out = Vec::new();
    let mut evs = Vec::new();
    loop {
        match r.read_line(&mut out).unwrap() {
            LineRead::Line { ending } => evs.push(Ev::Line(out.clone(), ending)),
            LineRead::TooLong => evs.push(Ev::TooLong),
            LineRead::Truncated => evs.push(Ev::Truncated(out.clone())),
            LineRead::Eof => {
                evs.push(Ev::Eof);
                return evs;
            }
        }
    }
}

/// The specification, written as plainly as possible.
fn model(input: &[u8], max: usize) -> Vec<Ev> {
    let mut evs = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = &rest[..i];
                let (content, ending) = match line.last() {
                    Some(b'\r') => (&line[..i - 1], LineEnding::CrLf),
                    _ => (line, LineEnding::BareLf),
                };
                if content.len() > max {
                    evs.push(Ev::TooLong);
                } else {
                    evs.push(Ev::Line(content.to_vec(), ending));
                }
                rest = &rest[i + 1..];
            }
            None => {
                if rest.len() > max + 1 {
                    evs.push(Ev::TooLong);
                } else {
                    evs.push(Ev::Truncated(rest.to_vec()));
                }
                rest = &[];
            }
        }
    }
    evs.push(Ev::Eof);
    evs
}

#[test]
fn reads_crlf_bare_lf_and_inner_cr() {
    let mut r = LineReader::new(&b"HELO a\r\nNOOP\nx\ry\r\n\r\n"[..], 100);
    assert_eq!(
        read_all_lines(&mut r),
        vec![
            Ev::Line(b"HELO a".to_vec(), LineEnding::CrLf),
            Ev::Line(b"NOOP".to_vec(), LineEnding::BareLf),
            Ev::Line(b"x\ry".to_vec(), LineEnding::CrLf),
            Ev::Line(b"".to_vec(), LineEnding::CrLf),
            Ev::Eof,
        ]
    );
}

#[test]
fn too_long_line_is_discarded_to_its_end_and_reader_resyncs() {
    let mut input = vec![b'A'; 10_000];
    input.extend_from_slice(b"\r\nQUIT\r\n");
    let mut r = LineReader::new(Trickle::new(&input, 7), 512);
    assert_eq!(
        read_all_lines(&mut r),
        vec![Ev::TooLong, Ev::Line(b"QUIT".to_vec(), LineEnding::CrLf), Ev::Eof]
    );
}

#[test]
fn exact_maximum_is_accepted_and_one_more_is_not() {
    let mut input = vec![b'x'; 10];
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(&[b'y'; 11]);
    input.extend_from_slice(b"\r\n");
    let mut r = LineReader::new(Trickle::new(&input, 3), 10);
    assert_eq!(
        read_all_lines(&mut r),
        vec![Ev::Line(vec![b'x'; 10], LineEnding::CrLf), Ev::TooLong, Ev::Eof]
    );
}

#[test]
fn eof_mid_line_is_truncated_and_long_tail_is_too_long() {
    let mut r = LineReader::new(&b"ok\npartial"[..], 100);
    assert_eq!(
        read_all_lines(&mut r),
        vec![
            Ev::Line(b"ok".to_vec(), LineEnding::BareLf),
            Ev::Truncated(b"partial".to_vec()),
            Ev::Eof
        ]
    );
    let mut r = LineReader::new(&[b'z'; 50][..], 10);
    assert_eq!(read_all_lines(&mut r), vec![Ev::TooLong, Ev::Eof]);
}

#[test]
fn io_errors_lose_no_bytes() {
    for kind in [io::ErrorKind::WouldBlock, io::ErrorKind::Interrupted] {
        let mut t = Trickle::new(b"abc\r\ndef\r\n", 2);
        t.fail_at = Some((4, kind));
        let mut r = LineReader::new(t, 100);
        let mut out = Vec::new();
        let mut lines = Vec::new();
        loop {
            match r.read_line(&mut out) {
                Ok(LineRead::Line { .. }) => lines.push(out.clone()),
                Ok(LineRead::Eof) => break,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
        }
        assert_eq!(lines, vec![b"abc".to_vec(), b"def".to_vec()]);
    }
}

#[test]
fn buffered_bytes_can_be_taken_and_read_raw() {
    let mut r = LineReader::new(&b"STARTTLS\r\nEVIL\r\n"[..], 100);
    let mut out = Vec::new();
    assert_eq!(
        r.read_line(&mut out).unwrap(),
        LineRead::Line {
            ending: LineEnding::CrLf
        }
    );
    assert_eq!(r.buffered(), b"EVIL\r\n");
    assert_eq!(r.take_buffered(), b"EVIL\r\n");
    assert_eq!(r.read_line(&mut out).unwrap(), LineRead::Eof);

    let mut r = LineReader::new(&b"BDAT 5\r\nhello"[..], 100);
    r.read_line(&mut out).unwrap();
    let mut chunk = Vec::new();
    (&mut r).take(5).read_to_end(&mut chunk).unwrap();
    assert_eq!(chunk, b"hello");
}

#[test]
fn line_buffer_splits_lines_and_payloads() {
    let mut b = LineBuffer::new(100, 1000);
    b.push(b"A1 APPEND INBOX {5}\r\nhel").unwrap();
    assert_eq!(
        b.next_line(),
        Some(LineEvent::Line {
            line: b"A1 APPEND INBOX {5}".to_vec(),
            ending: LineEnding::CrLf
        })
    );
    assert_eq!(b.take_exact(5), None);
    assert_eq!(b.pending_len(), 3);
    b.push(b"lo\r\nA2 NOOP\n").unwrap();
    assert_eq!(b.take_exact(5), Some(b"hello".to_vec()));
    assert_eq!(
        b.next_line(),
        Some(LineEvent::Line {
            line: vec![],
            ending: LineEnding::CrLf
        })
    );
    assert_eq!(
        b.next_line(),
        Some(LineEvent::Line {
            line: b"A2 NOOP".to_vec(),
            ending: LineEnding::BareLf
        })
    );
    assert_eq!(b.next_line(), None);
    assert_eq!(b.take_up_to(10), Vec::<u8>::new());
}

#[test]
fn line_buffer_push_is_bounded() {
    let mut b = LineBuffer::new(10, 20);
    b.push(&[b'a'; 15]).unwrap();
    assert_eq!(
        b.push(&[b'b'; 6]),
        Err(LineError::BufferFull {
            pending: 15,
            pushed: 6,
            limit: 20
        })
    );
    assert_eq!(b.free_space(), 5);
    // An unterminated over-long line is dropped by next_line, making room.
    assert_eq!(b.next_line(), None);
    assert_eq!(b.pending_len(), 0);
    b.push(b"tail\r\nok\r\n").unwrap();
    assert_eq!(b.next_line(), Some(LineEvent::TooLong));
    assert_eq!(
        b.next_line(),
        Some(LineEvent::Line {
            line: b"ok".to_vec(),
            ending: LineEnding::CrLf
        })
    );
    assert_eq!(LineBuffer::new(10, 0).max_pending(), 12);
}

#[test]
fn line_buffer_take_pending_after_starttls() {
    let mut b = LineBuffer::new(100, 1000);
    b.push(b"STARTTLS\r\nMAIL FROM:<x>\r\n").unwrap();
    assert!(matches!(b.next_line(), Some(LineEvent::Line { .. })));
    assert_eq!(b.take_pending(), b"MAIL FROM:<x>\r\n");
    assert_eq!(b.next_line(), None);
}

#[test]
fn format_line_refuses_embedded_newlines() {
    let mut out = b"x".to_vec();
    assert_eq!(
        format_line(b"250 ok\r\nRCPT", &mut out),
        Err(LineError::EmbeddedNewline { offset: 6 })
    );
    assert_eq!(out, b"x");
    format_line(b"250 ok", &mut out).unwrap();
    assert_eq!(out, b"x250 ok\r\n");

    let mut w = LineWriter::new(Vec::new());
    w.write_line(b"+OK").unwrap();
    let err = w.write_line(b"a\rb").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    w.flush().unwrap();
    assert_eq!(w.into_inner(), b"+OK\r\n");
}

#[test]
fn dot_helpers() {
    assert_eq!(&*dot_stuff(b".hidden"), b"..hidden");
    assert_eq!(&*dot_stuff(b"plain"), b"plain");
    assert_eq!(dot_unstuff(b"."), DotLine::End);
    assert_eq!(dot_unstuff(b"..x"), DotLine::Data(b".x"));
    assert_eq!(dot_unstuff(b"x."), DotLine::Data(b"x."));
    assert_eq!(dot_unstuff(b""), DotLine::Data(b""));
    assert!(is_data_terminator(b"."));
    assert!(!is_data_terminator(b".."));
}

#[test]
fn dot_stuffer_converts_and_terminates() {
    let mut s = DotStuffer::new();
    let mut out = Vec::new();
    s.push(b".a\n", &mut out);
    s.push(b"b\r", &mut out);
    s.push(b"\n.", &mut out);
    s.push(b"\n\r.\r\n", &mut out);
    s.push(b"end", &mut out);
    s.finish(&mut out);
    assert_eq!(out, b"..a\r\nb\r\n..\r\n\r..\r\nend\r\n.\r\n");
    let mut out = Vec::new();
    s.finish(&mut out);
    assert_eq!(out, b".\r\n");
}

fn chunked(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    for &c in cuts {
        let end = (pos + c).min(data.len());
        pieces.push(data[pos..end].to_vec());
        pos = end;
    }
    pieces.push(data[pos..].to_vec());
    pieces
}

fn line_input() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'.'), b'a'..=b'e', any::<u8>()],
        0..300,
    )
}

proptest! {
    #[test]
    fn prop_reader_matches_model(input in line_input(), max in 1usize..40, step in 1usize..50) {
        let mut r = LineReader::new(Trickle::new(&input, step), max);
        prop_assert_eq!(read_all_lines(&mut r), model(&input, max));
    }

    #[test]
    fn prop_buffer_matches_model(input in line_input(), max in 1usize..40, cuts in proptest::collection::vec(0usize..30, 0..20)) {
        let mut b = LineBuffer::new(max, max + 8);
        let mut evs = Vec::new();
        for piece in chunked(&input, &cuts) {
            let mut rest = &piece[..];
            while !rest.is_empty() {
                let n = b.free_space().min(rest.len());
                b.push(&rest[..n]).unwrap();
                rest = &rest[n..];
                while let Some(ev) = b.next_line() {
                    evs.push(match ev {
                        LineEvent::Line { line, ending } => Ev::Line(line, ending),
                        LineEvent::TooLong => Ev::TooLong,
                    });
                }
                prop_assert!(b.pending_len() <= b.max_pending());
            }
        }
        // At end of input, what is left is a partial line (model: Truncated or TooLong).
        let mut expected = model(&input, max);
        expected.pop();
        match expected.last() {
            Some(Ev::Truncated(partial)) => {
                prop_assert_eq!(b.pending(), &partial[..]);
                expected.pop();
            }
            Some(Ev::TooLong) if !input.ends_with(b"\n") => {
                expected.pop();
            }
            _ => prop_assert_eq!(b.pending_len(), 0),
        }
        prop_assert_eq!(evs, expected);
    }

    #[test]
    fn prop_dot_stuffing_round_trips(lines in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(b'.'), b'a'..=b'c', Just(b'\r')], 0..8), 0..20), cuts in proptest::collection::vec(0usize..10, 0..10)) {
        // Content in queue form: LF-terminated lines, no CR next to the LF.
        let lines: Vec<Vec<u8>> = lines.into_iter().map(|mut l| { while l.last() == Some(&b'\r') { l.pop(); } l }).collect();
        let mut content = Vec::new();
        for l in &lines { content.extend_from_slice(l); content.push(b'\n'); }
        let mut s = DotStuffer::new();
        let mut wire = Vec::new();
        for piece in chunked(&content, &cuts) { s.push(&piece, &mut wire); }
        s.finish(&mut wire);
        // No bare LF on the wire, and no lone "." line except the terminator, even if a bare
        // CR were taken as a line end.
        for (i, &b) in wire.iter().enumerate() {
            if b == b'\n' { prop_assert_eq!(wire[i - 1], b'\r'); }
        }
        let loose: Vec<&[u8]> = wire.split(|&b| b == b'\n' || b == b'\r').filter(|l| !l.is_empty()).collect();
        prop_assert_eq!(loose.iter().filter(|l| **l == b".").count(), 1);
        // A strict receiver recovers the content.
        let mut r = LineReader::new(&wire[..], 1000);
        let mut out = Vec::new();
        let mut got = Vec::new();
        loop {
            match r.read_line(&mut out).unwrap() {
                LineRead::Line { ending } => {
                    prop_assert_eq!(ending, LineEnding::CrLf);
                    match dot_unstuff(&out) {
                        DotLine::End => break,
                        DotLine::Data(d) => got.push(d.to_vec()),
                    }
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        // Lines with an inner bare CR followed by '.' gain one dot (documented).
        let expected: Vec<Vec<u8>> = lines.iter().map(|l| {
            let mut e = Vec::new();
            for (i, &b) in l.iter().enumerate() {
                if b == b'.' && i > 0 && l[i - 1] == b'\r' { e.push(b'.'); }
                e.push(b);
            }
            e
        }).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(r.read_line(&mut out).unwrap(), LineRead::Eof);
    }
}
