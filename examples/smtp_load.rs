//! A pipelining SMTP load generator for the throughput benchmark
//! (`benches/smtp-throughput.sh`); `smtp-source` does not pipeline.
//!
//! Usage: `smtp_load HOST:PORT SESSIONS MESSAGES SIZE [PER_CONNECTION]`
//!
//! Each session sends `MAIL`, `RCPT` and `DATA` in one write (RFC 2920), then the message,
//! and waits for the final reply; with `PER_CONNECTION` > 1 it reuses the connection.
//! Prints `sent N ok M failed F seconds S` on one line.

use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: smtp_load HOST:PORT SESSIONS MESSAGES SIZE [PER_CONNECTION]");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let sessions: usize = args[2].parse()?;
    let messages: usize = args[3].parse()?;
    let size: usize = args[4].parse()?;
    let per_conn: usize = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let body = message(size);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let share = messages / sessions + usize::from(s < messages % sessions);
        let addr = addr.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            session(&addr, share, per_conn, &body).await
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await?;
        ok += o;
        failed += f;
    }
    println!(
        "sent {messages} ok {ok} failed {failed} seconds {:.3}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: load@example.org\r\nTo: user@example.com\r\nSubject: load\r\n\r\n".to_vec();
    while m.len() + 2 < size {
        let line = b"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789\r\n";
        let take = line.len().min(size - m.len() - 2);
        m.extend_from_slice(&line[..take]);
        if !m.ends_with(b"\n") {
            m.extend_from_slice(b"\r\n");
        }
    }
    m.extend_from_slice(b".\r\n");
    m
}

async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<u16> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

async fn session(addr: &str, count: usize, per_conn: usize, body: &[u8]) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    let mut left = count;
    while left > 0 {
        let batch = left.min(per_conn.max(1));
        left -= batch;
        match connection(addr, batch, body).await {
            Ok(n) => {
                ok += n;
                failed += batch - n;
            }
            Err(_) => failed += batch,
        }
    }
    (ok, failed)
}

async fn connection(addr: &str, count: usize, body: &[u8]) -> std::io::Result<usize> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    reply(&mut r).await?;
    w.write_all(b"EHLO load.example.org\r\n").await?;
    reply(&mut r).await?;
    let mut ok = 0;
    for _ in 0..count {
        w.write_all(b"MAIL FROM:<load@example.org>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
            .await?;
        let codes = [
            reply(&mut r).await?,
            reply(&mut r).await?,
            reply(&mut r).await?,
        ];
        if codes != [250, 250, 354] {
            w.write_all(b"RSET\r\n").await?;
            reply(&mut r).await?;
            continue;
        }
        w.write_all(body).await?;
        if reply(&mut r).await? == 250 {
            ok += 1;
        }
    }
    w.write_all(b"QUIT\r\n").await?;
    let _ = reply(&mut r).await;
    Ok(ok)
}
