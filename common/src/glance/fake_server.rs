//! A scripted stand-in for Glance in unit tests: answers one request per connection (the client
//! does not reuse connections) and records what it was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use super::{GlanceConfig, LocationApi};

pub(super) fn config(url: String, token: Option<&str>, location_api: LocationApi) -> GlanceConfig {
    GlanceConfig {
        url,
        ca_file: None,
        token: token.map(str::to_string),
        keystone: None,
        request_timeout: Duration::from_secs(5),
        location_api,
    }
}

/// What the server was sent: each request's head (lowercased) and body.
pub(super) type Seen = Vec<(String, Vec<u8>)>;

/// Serves `replies` (status, JSON body) in order; the thread returns what it was sent.
pub(super) fn answering(replies: Vec<(u16, &'static str)>) -> (String, thread::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let mut seen = Vec::new();
        for (status, reply) in replies {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let mut body = Vec::new();
            if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
            {
                body.resize(len.trim().parse().unwrap(), 0);
                reader.read_exact(&mut body).unwrap();
            } else if head.contains("transfer-encoding: chunked") {
                while !body.ends_with(b"0\r\n\r\n") {
                    let mut byte = [0u8];
                    reader.read_exact(&mut byte).unwrap();
                    body.push(byte[0]);
                }
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{reply}",
                reply.len()
            );
            stream.write_all(answer.as_bytes()).unwrap();
            seen.push((head, body));
        }
        seen
    });
    (url, server)
}
