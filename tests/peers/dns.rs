//! A small authoritative DNS server for tests: answers MX, A and AAAA queries from a
//! [`Zone`] built by the test, over UDP and TCP on the same 127.0.0.1 port, in background
//! threads. Give its address to the gateway as `delivery: { nameservers: ["ADDR"] }`, or
//! to a `DeliveryConfig`.
//!
//! - A name with records answers them (NOERROR with no answer for the other types).
//! - A name marked with [`Zone::exists`] answers NOERROR without records (NODATA).
//! - Every other name is NXDOMAIN.
//! - [`Zone::servfail`], [`Zone::refused`], [`Zone::silent`] (never answers) and
//!   [`Zone::truncate_udp`] (TC over UDP, full answer over TCP) apply per name.
//!
//! The zone can be changed while the server runs ([`DnsServer::update`]); every query is
//! logged ([`DnsServer::queries`]). TTLs are 0 unless set ([`Zone::ttl`]), so resolvers
//! cache nothing and a change is seen by the next lookup. Names are written in full (no
//! compression); queries are parsed with bounds checks and anything malformed is
//! answered FORMERR or ignored.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Query type A.
pub const A: u16 = 1;
/// Query type MX.
pub const MX: u16 = 15;
/// Query type AAAA.
pub const AAAA: u16 = 28;
const OPT: u16 = 41;

const NOERROR: u16 = 0;
const FORMERR: u16 = 1;
const SERVFAIL: u16 = 2;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;

/// How often the server threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// One record of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Preference and exchange host ("." or "" for the root, as in a null MX).
    Mx(u16, String),
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
}

impl Record {
    fn rtype(&self) -> u16 {
        match self {
            Record::Mx(..) => MX,
            Record::A(_) => A,
            Record::Aaaa(_) => AAAA,
        }
    }
}

/// Something other than an answer, for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    ServFail,
    Refused,
    Silent,
    TruncateUdp,
}

/// The records served. Names are case-insensitive, with or without a trailing dot.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    names: HashMap<String, Vec<Record>>,
    behaviour: HashMap<String, Behaviour>,
    ttl: u32,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    /// An empty zone: every name is NXDOMAIN.
    pub fn new() -> Zone {
        Zone::default()
    }

    fn add(&mut self, name: &str, record: Record) -> &mut Zone {
        self.names.entry(key(name)).or_default().push(record);
        self
    }

    /// An MX record.
    pub fn mx(&mut self, name: &str, preference: u16, host: &str) -> &mut Zone {
        self.add(name, Record::Mx(preference, host.to_string()))
    }

    /// A null MX (RFC 7505): `0 .`.
    pub fn null_mx(&mut self, name: &str) -> &mut Zone {
        self.mx(name, 0, ".")
    }

    /// An A record.
    pub fn a(&mut self, name: &str, ip: &str) -> &mut Zone {
        let ip = ip.parse().expect("test zone: bad IPv4 address");
        self.add(name, Record::A(ip))
    }

    /// An AAAA record.
    pub fn aaaa(&mut self, name: &str, ip: &str) -> &mut Zone {
        let ip = ip.parse().expect("test zone: bad IPv6 address");
        self.add(name, Record::Aaaa(ip))
    }

    /// Make `name` exist, so that types it has no records of are NODATA, not NXDOMAIN.
    pub fn exists(&mut self, name: &str) -> &mut Zone {
        self.names.entry(key(name)).or_default();
        self
    }

    /// Remove every record of `name` (it becomes NXDOMAIN) and its behaviour.
    pub fn remove(&mut self, name: &str) -> &mut Zone {
        self.names.remove(&key(name));
        self.behaviour.remove(&key(name));
        self
    }

    /// Remove the MX records of `name`, keeping the name and its other records.
    pub fn clear_mx(&mut self, name: &str) -> &mut Zone {
        if let Some(records) = self.names.get_mut(&key(name)) {
            records.retain(|r| r.rtype() != MX);
        }
        self
    }

    /// Queries for `name` are answered SERVFAIL.
    pub fn servfail(&mut self, name: &str) -> &mut Zone {
        self.behaviour.insert(key(name), Behaviour::ServFail);
        self
    }

    /// Queries for `name` are answered REFUSED.
    pub fn refused(&mut self, name: &str) -> &mut Zone {
        self.behaviour.insert(key(name), Behaviour::Refused);
        self
    }

    /// Queries for `name` are never answered.
    pub fn silent(&mut self, name: &str) -> &mut Zone {
        self.behaviour.insert(key(name), Behaviour::Silent);
        self
    }

    /// UDP queries for `name` get a truncated (TC) empty answer; TCP gets the records.
    pub fn truncate_udp(&mut self, name: &str) -> &mut Zone {
        self.behaviour.insert(key(name), Behaviour::TruncateUdp);
        self
    }

    /// The TTL of every record from now on (0 at first: nothing is cached).
    pub fn ttl(&mut self, seconds: u32) -> &mut Zone {
        self.ttl = seconds;
        self
    }
}

/// One query the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name asked for, lower case, without trailing dot.
    pub name: String,
    /// The query type ([`A`], [`MX`], [`AAAA`], ...).
    pub qtype: u16,
    /// Whether it came over TCP.
    pub tcp: bool,
}

struct Shared {
    zone: Mutex<Zone>,
    log: Mutex<Vec<Query>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running DNS server; stopped (threads joined) when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DnsServer {
    /// Start serving `zone` on 127.0.0.1, UDP and TCP on one free port.
    pub fn start(zone: Zone) -> DnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("DNS server: local address");
        let shared = Arc::new(Shared {
            zone: Mutex::new(zone),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let connections = Arc::new(Mutex::new(Vec::new()));
        let threads = vec![
            {
                let shared = shared.clone();
                thread::spawn(move || serve_udp(udp, &shared))
            },
            {
                let shared = shared.clone();
                let connections = connections.clone();
                thread::spawn(move || serve_tcp(tcp, shared, connections))
            },
        ];
        DnsServer {
            addr,
            shared,
            threads,
            connections,
        }
    }

    /// Where the server listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Change the zone; the next query sees the change.
    pub fn update(&self, change: impl FnOnce(&mut Zone)) {
        change(&mut lock(&self.shared.zone));
    }

    /// Every query received so far, in order.
    pub fn queries(&self) -> Vec<Query> {
        lock(&self.shared.log).clone()
    }

    /// How many queries of `qtype` for `name` were received.
    pub fn count(&self, name: &str, qtype: u16) -> usize {
        let name = key(name);
        lock(&self.shared.log)
            .iter()
            .filter(|q| q.name == name && q.qtype == qtype)
            .count()
    }

    /// Forget the queries received so far.
    pub fn clear_queries(&self) {
        lock(&self.shared.log).clear();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let connections: Vec<_> = lock(&self.connections).drain(..).collect();
        for t in connections {
            let _ = t.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same free port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("DNS server: bind UDP");
        let addr = udp.local_addr().expect("DNS server: local address");
        if let Ok(tcp) = TcpListener::bind(addr) {
            return (udp, tcp);
        }
    }
    panic!("DNS server: no port free for both UDP and TCP");
}

fn serve_udp(socket: UdpSocket, shared: &Shared) {
    socket
        .set_read_timeout(Some(POLL))
        .expect("DNS server: UDP read timeout");
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => continue,
        };
        if let Some(reply) = buf.get(..n).and_then(|q| answer(q, false, shared)) {
            let _ = socket.send_to(&reply, from);
        }
    }
}

fn serve_tcp(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    listener
        .set_nonblocking(true)
        .expect("DNS server: nonblocking listener");
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                let handle = thread::spawn(move || serve_connection(stream, &shared));
                lock(&connections).push(handle);
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// One TCP connection: two-byte length, message; as many as the client sends.
fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    loop {
        let mut len = [0u8; 2];
        if read_full(&mut stream, &mut len, shared).is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if read_full(&mut stream, &mut msg, shared).is_err() {
            return;
        }
        if let Some(reply) = answer(&msg, true, shared) {
            let Ok(n) = u16::try_from(reply.len()) else {
                return;
            };
            let mut framed = n.to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

/// Fill `buf`, waiting through read timeouts until the server stops.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], shared: &Shared) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        if shared.stop.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let rest = buf.get_mut(filled..).unwrap_or_default();
        match stream.read(rest) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The parsed question of a query.
struct Question<'a> {
    /// The question section exactly as received (name, type, class).
    raw: &'a [u8],
    /// The name as received (wire format), for answer owner names.
    raw_name: &'a [u8],
    name: String,
    qtype: u16,
    /// The EDNS UDP payload size, when the query has an OPT record.
    edns_size: Option<u16>,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// The question of `msg` (which has passed the header checks).
fn parse_question(msg: &[u8]) -> Option<Question<'_>> {
    let mut pos = 12usize;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = usize::from(*msg.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        if len > 63 {
            return None; // compression or extended label types: not in a question we send
        }
        let label = msg.get(pos + 1..pos + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += 1 + len;
        if pos > 12 + 255 {
            return None;
        }
    }
    let qtype = be16(msg, pos)?;
    let _qclass = be16(msg, pos + 2)?;
    let end = pos + 4;
    let arcount = be16(msg, 10)?;
    // An OPT record right after the question: root name, type 41, class = payload size.
    let edns_size = (arcount > 0 && msg.get(end) == Some(&0) && be16(msg, end + 1) == Some(OPT))
        .then(|| be16(msg, end + 3))
        .flatten();
    Some(Question {
        raw: msg.get(12..end)?,
        raw_name: msg.get(12..pos)?,
        name: labels.join("."),
        qtype,
        edns_size,
    })
}

/// The reply to one query; `None` to stay silent.
fn answer(msg: &[u8], tcp: bool, shared: &Shared) -> Option<Vec<u8>> {
    let id = be16(msg, 0)?;
    let flags = be16(msg, 2)?;
    if flags & 0x8000 != 0 {
        return None; // a response, not a query
    }
    let opcode = (flags >> 11) & 0xf;
    let rd = flags & 0x0100;
    let header_only = |rcode: u16| {
        let mut out = Vec::with_capacity(12);
        for word in [
            id,
            0x8000 | (opcode << 11) | rd | 0x0080 | rcode,
            0,
            0,
            0,
            0,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out
    };
    if opcode != 0 {
        return Some(header_only(NOTIMP));
    }
    if be16(msg, 4)? != 1 {
        return Some(header_only(FORMERR));
    }
    let Some(q) = parse_question(msg) else {
        return Some(header_only(FORMERR));
    };
    lock(&shared.log).push(Query {
        name: q.name.clone(),
        qtype: q.qtype,
        tcp,
    });

    let zone = lock(&shared.zone);
    let mut truncated = false;
    let (rcode, records): (u16, Vec<Record>) = match zone.behaviour.get(&q.name) {
        Some(Behaviour::Silent) => return None,
        Some(Behaviour::ServFail) => (SERVFAIL, Vec::new()),
        Some(Behaviour::Refused) => (REFUSED, Vec::new()),
        Some(Behaviour::TruncateUdp) if !tcp => {
            truncated = true;
            (NOERROR, Vec::new())
        }
        _ => match zone.names.get(&q.name) {
            None => (NXDOMAIN, Vec::new()),
            Some(all) => (
                NOERROR,
                all.iter()
                    .filter(|r| r.rtype() == q.qtype)
                    .cloned()
                    .collect(),
            ),
        },
    };
    let ttl = zone.ttl;
    drop(zone);

    let build = |records: &[Record], tc: bool| {
        let flags =
            0x8000 | (opcode << 11) | 0x0400 | if tc { 0x0200 } else { 0 } | rd | 0x0080 | rcode;
        let count = u16::try_from(records.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(512);
        let arcount = u16::from(q.edns_size.is_some());
        for word in [id, flags, 1, count, 0, arcount] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(q.raw);
        for r in records {
            out.extend_from_slice(q.raw_name);
            out.extend_from_slice(&r.rtype().to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes()); // class IN
            out.extend_from_slice(&ttl.to_be_bytes());
            let rdata = match r {
                Record::Mx(pref, host) => {
                    let mut d = pref.to_be_bytes().to_vec();
                    d.extend_from_slice(&encode_name(host));
                    d
                }
                Record::A(ip) => ip.octets().to_vec(),
                Record::Aaaa(ip) => ip.octets().to_vec(),
            };
            out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&rdata);
        }
        if q.edns_size.is_some() {
            // OPT: root name, type 41, our payload size 1232, no extended flags, no options.
            out.push(0);
            for word in [OPT, 1232, 0, 0, 0] {
                out.extend_from_slice(&word.to_be_bytes());
            }
        }
        out
    };
    let full = build(&records, truncated);
    let limit = usize::from(q.edns_size.unwrap_or(512).clamp(512, 1232));
    if !tcp && full.len() > limit {
        return Some(build(&[], true));
    }
    Some(full)
}

/// A name in wire format, uncompressed; "." or "" is the root.
fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = label.as_bytes();
        assert!(bytes.len() <= 63, "test zone: label too long: {label}");
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
    out
}
