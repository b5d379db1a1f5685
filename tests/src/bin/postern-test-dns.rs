//! postern-test-dns — a small authoritative DNS server for tests, on loopback only.
//!
//! `postern-test-dns ZONE_FILE PORT_FILE`: binds UDP on 127.0.0.1 with a port the kernel
//! picks, writes the port number to PORT_FILE, and answers queries from the records in
//! ZONE_FILE until it is killed (or after ten minutes, so a forgotten one cannot linger).
//! Zone lines: `NAME TYPE VALUE` with TYPE `MX` (`PREF HOST`, `0 .` is a null MX), `A`,
//! `AAAA`; names without the trailing dot; `#` comments. A name with no record of the type
//! asked but with others gets an empty NOERROR answer; an unknown name gets NXDOMAIN.
//! It is a real DNS server speaking the wire protocol (hickory-proto), so the smtp
//! client's resolver is exercised exactly as against the Internet.
#![forbid(unsafe_code)]

use hickory_proto::op::{Message, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(zone), Some(port_file)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: postern-test-dns ZONE_FILE PORT_FILE");
        std::process::exit(64);
    };
    let text = std::fs::read_to_string(zone).unwrap_or_else(|e| {
        eprintln!("postern-test-dns: {zone}: {e}");
        std::process::exit(66)
    });
    let records = parse_zone(&text);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    std::fs::write(port_file, port.to_string()).expect("write port file");
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok();
    let end = Instant::now() + Duration::from_secs(600);
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let reply = answer(&query, &records);
        if let Ok(bytes) = reply.to_vec() {
            let _ = sock.send_to(&bytes, peer);
        }
    }
}

fn parse_zone(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let name = |s: &str| Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).expect("zone name");
        let rdata = match (parts.get(1).copied(), &parts[2..]) {
            (Some("MX"), [pref, host]) => {
                let exchange = if *host == "." { Name::root() } else { name(host) };
                RData::MX(MX::new(pref.parse().expect("MX preference"), exchange))
            }
            (Some("A"), [ip]) => RData::A(A(ip.parse().expect("A address"))),
            (Some("AAAA"), [ip]) => RData::AAAA(AAAA(ip.parse().expect("AAAA address"))),
            _ => panic!("bad zone line {line:?}"),
        };
        out.push(Record::from_rdata(name(parts[0]), 60, rdata));
    }
    out
}

fn answer(query: &Message, records: &[Record]) -> Message {
    let mut meta = Metadata::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
    meta.authoritative = true;
    meta.recursion_desired = query.metadata.recursion_desired;
    meta.recursion_available = true;
    let mut reply = Message::new(query.metadata.id, MessageType::Response, query.metadata.op_code);
    let Some(q) = query.queries.first() else {
        meta.response_code = ResponseCode::FormErr;
        reply.metadata = meta;
        return reply;
    };
    reply.queries.push(q.clone());
    let name = q.name().to_lowercase();
    let known: Vec<&Record> = records.iter().filter(|r| r.name.to_lowercase() == name).collect();
    if known.is_empty() {
        meta.response_code = ResponseCode::NXDomain;
    }
    for r in known
        .into_iter()
        .filter(|r| r.record_type() == q.query_type() || q.query_type() == RecordType::ANY)
    {
        reply.answers.push(r.clone());
    }
    reply.metadata = meta;
    reply
}
