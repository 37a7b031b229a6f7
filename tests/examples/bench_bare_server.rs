//! The ceiling for `scripts/bench-edge.sh`: an HTTP/1.1 keep-alive server that checks nothing and answers every
//! request with the same file, either by `sendfile` from a memfd (`--mode sendfile`, no user-space copy) or by
//! writing the bytes (`--mode copy`). No server that sends the segment over TCP on this machine, with the load tool
//! on the same cores, can do much better, so it bounds what the edge/nginx ratio can reach here.
//!
//! `bench_bare_server --addr 127.0.0.1:7783 --file seg_000.ts --mode sendfile`
#![allow(clippy::unwrap_used)]

use sharegate_e2e::arg;
use std::os::fd::AsFd;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let addr = arg("--addr").expect("--addr HOST:PORT");
    let data = std::fs::read(arg("--file").expect("--file PATH")).unwrap();
    let sendfile = match arg("--mode").as_deref() {
        Some("sendfile") => true,
        Some("copy") => false,
        other => panic!("--mode sendfile|copy, not {other:?}"),
    };
    let memfd = rustix::fs::memfd_create("segment", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let mut written = 0;
    while written < data.len() {
        written += rustix::io::write(&memfd, &data[written..]).unwrap();
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\ncontent-length: {}\r\ncache-control: max-age=86400\r\n\r\n",
        data.len()
    );
    // Copy mode writes the head and the object as one pre-framed buffer.
    let framed: Vec<u8> = [head.as_bytes(), &data].concat();
    let (memfd, framed, head) = (Arc::new(memfd), Arc::new(framed), Arc::new(head.into_bytes()));
    let len = data.len();
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let (memfd, framed, head) = (memfd.clone(), framed.clone(), head.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut have = 0;
            loop {
                match s.read(&mut buf[have..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => have += n,
                }
                // Every complete request head in the buffer gets the object (wrk sends GETs without bodies).
                while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                    let sent = if sendfile {
                        send_file(&mut s, &head, memfd.as_fd(), len).await
                    } else {
                        s.write_all(&framed).await
                    };
                    if sent.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..have, 0);
                    have -= end + 4;
                }
                if have == buf.len() {
                    return;
                }
            }
        });
    }
}

async fn send_file(
    s: &mut tokio::net::TcpStream,
    head: &[u8],
    file: std::os::fd::BorrowedFd<'_>,
    len: usize,
) -> std::io::Result<()> {
    // The head with MSG_MORE, so it leaves in the same segment as the object's first bytes.
    let mut sent = 0;
    while sent < head.len() {
        sent += s
            .async_io(Interest::WRITABLE, || {
                rustix::net::send(s.as_fd(), &head[sent..], rustix::net::SendFlags::MORE).map_err(std::io::Error::from)
            })
            .await?;
    }
    let mut offset = 0u64;
    while (offset as usize) < len {
        s.async_io(Interest::WRITABLE, || {
            let left = len - offset as usize;
            rustix::fs::sendfile(s.as_fd(), file, Some(&mut offset), left).map_err(std::io::Error::from)
        })
        .await?;
    }
    Ok(())
}
