//! Durability under SIGKILL: clients send continuously while the gateway is killed at
//! random moments and restarted on the same spool; every message that got `250` must be
//! in the spool, whole, and nothing half-written may be visible.
#![cfg(feature = "server")]

mod support;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Client, Gateway, Options, Rng, data_bytes, split_stamp};

/// How many times the gateway is killed (at least `MIN_KILLS`, more while time allows).
const KILLS: usize = 60;
const MIN_KILLS: usize = 50;

/// A message a client tried to send.
#[derive(Clone)]
struct Sent {
    rcpt: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct Record {
    /// Queue id -> message, for every `250`.
    acked: HashMap<String, Sent>,
    /// Message-Id -> message, for every message whose DATA was sent.
    attempted: HashMap<String, Sent>,
    /// DATA sent, no reply (the gateway died): may or may not be in the spool.
    unknown: usize,
}

fn message(client: usize, n: usize, rng: &mut Rng) -> (String, Vec<u8>) {
    let mid = format!("<crash.{client}.{n}.{}@test.example>", rng.next_u64());
    let mut body =
        format!("Message-Id: {mid}\r\nSubject: crash test {client}/{n}\r\n\r\n").into_bytes();
    let size = rng.range(100, 40_000) as usize;
    while body.len() < size {
        let len = rng.range(1, 120) as usize;
        for _ in 0..len {
            body.push(b"abcdefghijklmnopqrstuvwxyz.0123456789 \x80\xff"[rng.range(0, 40) as usize]);
        }
        body.extend_from_slice(b"\r\n");
    }
    (mid, body)
}

/// One transaction; `Ok(Some(id))` on 250, `Ok(None)` on another reply.
fn send_one(
    c: &mut Client,
    rcpt: &str,
    body: &[u8],
    rec: &Mutex<Record>,
    mid: &str,
) -> io::Result<Option<String>> {
    c.send(format!("MAIL FROM:<crash@sender.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes())?;
    let replies = [c.reply()?, c.reply()?, c.reply()?];
    if replies[0].code != 250 || replies[1].code != 250 || replies[2].code != 354 {
        panic!(
            "the gateway refused a valid transaction: {} / {} / {}",
            replies[0], replies[1], replies[2]
        );
    }
    let sent = Sent {
        rcpt: rcpt.to_string(),
        body: body.to_vec(),
    };
    rec.lock().unwrap().attempted.insert(mid.to_string(), sent);
    c.send(&data_bytes(body))?;
    let r = match c.reply() {
        Ok(r) => r,
        Err(e) => {
            rec.lock().unwrap().unknown += 1;
            return Err(e);
        }
    };
    if r.code == 250 {
        Ok(Some(r.queue_id()))
    } else {
        Ok(None)
    }
}

fn client_loop(
    k: usize,
    addr: SocketAddr,
    per_conn: usize,
    stop: &AtomicBool,
    rec: &Mutex<Record>,
) {
    let mut rng = Rng::new(0x5eed + k as u64);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let mut c = Client::new(s);
        let _ = c.tcp().set_read_timeout(Some(Duration::from_secs(10)));
        match c.reply() {
            Ok(r) if r.code == 220 => {}
            _ => continue,
        }
        if c.send(b"EHLO crash.client.example\r\n").is_err()
            || !c.reply().is_ok_and(|r| r.code == 250)
        {
            continue;
        }
        for _ in 0..per_conn {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            n += 1;
            let (mid, body) = message(k, n, &mut rng);
            let rcpt = format!("user{}@example.com", rng.range(0, 50));
            match send_one(&mut c, &rcpt, &body, rec, &mid) {
                Ok(Some(id)) => {
                    let prev = rec
                        .lock()
                        .unwrap()
                        .acked
                        .insert(id.clone(), Sent { rcpt, body });
                    assert!(prev.is_none(), "queue id {id} acknowledged twice");
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
        let _ = c.send(b"QUIT\r\n");
    }
}

#[test]
fn acknowledged_messages_survive_sigkill_at_random_moments() {
    let started = Instant::now();
    let mut gw = Gateway::with(Options::default().env("SPLITMX_LOG_FORMAT", "json"));
    let addr = gw.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    // One client with a new connection per message, two with many per connection.
    let clients: Vec<_> = [1usize, 25, 1000]
        .into_iter()
        .enumerate()
        .map(|(k, per_conn)| {
            let stop = Arc::clone(&stop);
            let rec = Arc::clone(&rec);
            std::thread::spawn(move || client_loop(k, addr, per_conn, &stop, &rec))
        })
        .collect();

    let mut rng = Rng::from_time();
    let seed = rng.next_u64();
    let mut rng = Rng::new(seed);
    // SIGKILL and restart; on a slow machine stop after MIN_KILLS to stay within the
    // time budget.
    let mut kills = 0;
    let mut restarting = Duration::ZERO;
    while kills < KILLS && (kills < MIN_KILLS || started.elapsed() < Duration::from_secs(50)) {
        std::thread::sleep(Duration::from_millis(rng.range(20, 300)));
        let t = Instant::now();
        gw.restart();
        restarting += t.elapsed();
        kills += 1;
    }
    // Let the clients finish what they are doing against the last gateway, then kill it
    // too, mid-traffic.
    std::thread::sleep(Duration::from_millis(200));
    gw.kill();
    kills += 1;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }
    let rec = rec.lock().unwrap();
    let acked = rec.acked.len();

    // The public reader (what `splitmx queue` uses) lists every acknowledged message.
    let listed = splitmx::spool::scan(&gw.spool).expect("scan the spool");
    let listed_ids: HashSet<String> = listed.iter().map(|i| i.id.to_string()).collect();
    for id in rec.acked.keys() {
        assert!(
            listed_ids.contains(id),
            "acknowledged message {id} is not in the spool"
        );
    }
    // Every listed message is one that was sent, whole; acknowledged ones with their
    // envelope. Read through a reopened spool: `read_message` recovers the whole spool on
    // each call, which is too slow for thousands of messages.
    let (rt, spool) = support::open_spool(&gw.spool);
    assert_eq!(
        spool.list().len(),
        listed.len(),
        "reopened spool and scan agree"
    );
    for info in &listed {
        let id = info.id.to_string();
        let stored = rt
            .block_on(spool.read(&info.id))
            .unwrap_or_else(|e| panic!("read {id}: {e}"));
        let (_, rest) = split_stamp(&stored.envelope.body);
        let head = String::from_utf8_lossy(&rest[..rest.len().min(200)]).into_owned();
        let mid = head
            .lines()
            .find_map(|l| l.strip_prefix("Message-Id: "))
            .unwrap_or_else(|| panic!("spooled message {id} has no Message-Id: {head:?}"))
            .to_string();
        let sent = rec
            .attempted
            .get(&mid)
            .unwrap_or_else(|| panic!("spooled message {id} ({mid}) was never sent"));
        assert!(
            rest == &sent.body[..],
            "spooled message {id} ({mid}) is not whole: {} bytes, {} sent",
            rest.len(),
            sent.body.len()
        );
        let rcpts: Vec<&str> = stored
            .envelope
            .recipients
            .iter()
            .map(|r| r.original.as_str())
            .collect();
        assert_eq!(rcpts, [sent.rcpt.as_str()], "message {id}");
        assert_eq!(stored.envelope.sender, "crash@sender.example");
        if let Some(acked) = rec.acked.get(&id) {
            assert!(
                rest == &acked.body[..],
                "message {id} is not the one acknowledged under its id"
            );
        }
    }
    rt.block_on(spool.close()).expect("close the spool");
    // And a few through the reader API itself.
    for (id, sent) in rec.acked.iter().take(3) {
        let stored = support::read(&gw.spool, id);
        assert!(
            split_stamp(&stored.envelope.body).1 == &sent.body[..],
            "message {id}"
        );
    }
    let all = listed;

    // How long the spool took to open (recover) at each start, from the gateway's log.
    let mut opens: Vec<u64> = gw
        .stderr_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "spool opened")
        .filter_map(|v| v["fields"]["ms"].as_u64())
        .collect();
    opens.sort_unstable();
    let segments: Vec<u64> = std::fs::read_dir(gw.spool.join("segments"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .collect()
        })
        .unwrap_or_default();
    eprintln!(
        "crash test: spool open (recovery) at {} starts: median {} ms, max {} ms; {} segment files, {} MiB on disk",
        opens.len(),
        opens.get(opens.len() / 2).copied().unwrap_or(0),
        opens.last().copied().unwrap_or(0),
        segments.len(),
        segments.iter().sum::<u64>() >> 20
    );
    eprintln!(
        "crash test: seed {seed}, {kills} SIGKILLs, {acked} messages acknowledged and found whole, {} DATA sent, {} without a reply at the kill, {} in the spool, {:.1} s ({:.1} s restarting)",
        rec.attempted.len(),
        rec.unknown,
        all.len(),
        started.elapsed().as_secs_f64(),
        restarting.as_secs_f64()
    );
    assert!(kills >= MIN_KILLS);
    assert!(
        acked >= 100,
        "too few messages got through to prove anything: {acked}"
    );
}
