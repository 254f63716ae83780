//! `make bench`, console part: N web-console sessions streaming at once
//! through openidcs' websocket-to-VNC proxy, each doing what noVNC does:
//! vncons ticket, `POST /console/session`, websocket, RFB 3.8 handshake, then
//! framebuffer updates at a fixed rate (VNC password authentication
//! included, as the browser does it). Full (non-incremental) frames in raw
//! encoding, so every session moves a whole screen per frame through the
//! proxy. Prints one JSON line with what was moved; the caller samples the
//! server's CPU and RSS meanwhile.
//!
//! usage: console-load BASE TOKEN HOST VM[,VM...] SESSIONS SECONDS FPS
//! (only loopback URLs are used by `make bench`).

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    base: String,
    token: String,
    host: String,
    vms: Vec<String>,
    sessions: usize,
    seconds: u64,
    fps: u32,
}

fn args() -> Result<Args, Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, token, host, vms, sessions, seconds, fps] = args.as_slice() else {
        return Err("usage: console-load BASE TOKEN HOST VM[,VM...] SESSIONS SECONDS FPS".into());
    };
    Ok(Args {
        base: base.trim_end_matches('/').to_owned(),
        token: token.clone(),
        host: host.clone(),
        vms: vms.split(',').map(str::to_owned).collect(),
        sessions: sessions.parse()?,
        seconds: seconds.parse()?,
        fps: fps.parse()?,
    })
}

#[derive(Default)]
struct Moved {
    frames: u64,
    bytes: u64,
    setup_ms: f64,
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args = args()?;
    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    // Open every session first, then stream them all for the same window.
    for index in 0..args.sessions {
        let vm = &args.vms[index % args.vms.len()];
        let began = Instant::now();
        let (socket, width, height, bytes_per_pixel) = open(&http, &args, vm).await?;
        sessions.push((socket, width, height, bytes_per_pixel, began.elapsed()));
    }
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let period = Duration::from_secs_f64(1.0 / f64::from(args.fps.max(1)));
    let started = Instant::now();
    let workers: Vec<_> = sessions
        .into_iter()
        .map(|(socket, width, height, bytes_per_pixel, setup)| {
            tokio::spawn(async move {
                let mut reader = RfbReader::new(socket);
                let mut moved = Moved {
                    setup_ms: setup.as_secs_f64() * 1000.0,
                    ..Moved::default()
                };
                let mut tick = tokio::time::interval(period);
                while Instant::now() < until {
                    tick.tick().await;
                    moved.bytes += reader.full_frame(width, height, bytes_per_pixel).await?;
                    moved.frames += 1;
                }
                reader.socket.close(None).await.ok();
                Ok::<Moved, Failure>(moved)
            })
        })
        .collect();
    let mut total = Moved::default();
    let mut setups = Vec::new();
    for worker in workers {
        let moved = worker.await??;
        total.frames += moved.frames;
        total.bytes += moved.bytes;
        setups.push(moved.setup_ms);
    }
    let elapsed = started.elapsed().as_secs_f64();
    setups.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "sessions": setups.len(),
            "seconds": elapsed,
            "frames": total.frames,
            "bytes": total.bytes,
            "frames_per_s": total.frames as f64 / elapsed,
            "mb_per_s": total.bytes as f64 / elapsed / 1e6,
            "setup_ms_median": setups.get(setups.len() / 2).copied().unwrap_or(0.0),
            "setup_ms_max": setups.last().copied().unwrap_or(0.0),
        })
    );
    Ok(())
}

/// vncons → session (which hands over the VNC password) → websocket → RFB
/// handshake. Answers the screen size and pixel size.
async fn open(
    http: &reqwest::Client,
    args: &Args,
    vm: &str,
) -> Result<(Socket, u16, u16, usize), Failure> {
    let vncons: Value = http
        .get(format!(
            "{}/api/client/vncons/{}/{vm}",
            args.base, args.host
        ))
        .bearer_auth(&args.token)
        .send()
        .await?
        .json()
        .await?;
    let url = vncons["data"]["url"]
        .as_str()
        .ok_or_else(|| format!("vncons answered {vncons}"))?;
    let ticket = url
        .split("ticket=")
        .nth(1)
        .ok_or_else(|| format!("no ticket in {url}"))?;
    let session: Value = http
        .post(format!("{}/console/session", args.base))
        .json(&json!({ "ticket": ticket }))
        .send()
        .await?
        .json()
        .await?;
    let ws_token = session["data"]["ws_token"]
        .as_str()
        .ok_or_else(|| format!("session answered {session}"))?;
    let password = session["data"]["password"].as_str().unwrap_or_default();
    let ws_url = format!(
        "{}/console/ws?token={ws_token}",
        args.base.replacen("http", "ws", 1)
    );
    let (socket, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let mut reader = RfbReader::new(socket);
    let version = reader.take(12).await?;
    if !version.starts_with(b"RFB 003.") {
        return Err(format!("not an RFB server: {version:?}").into());
    }
    reader.send(b"RFB 003.008\n".to_vec()).await?;
    let count = reader.take(1).await?[0] as usize;
    let types = reader.take(count).await?;
    if types.contains(&2) {
        // VNC authentication: DES of the 16-byte challenge, keyed by the
        // password (8 bytes, NUL-padded, each byte's bits reversed).
        reader.send(vec![2]).await?;
        let challenge = reader.take(16).await?;
        reader.send(vnc_response(password, &challenge)).await?;
    } else if types.contains(&1) {
        reader.send(vec![1]).await?;
    } else {
        return Err(format!("no supported VNC security type in {types:?}").into());
    }
    let result = reader.take(4).await?;
    if result != [0, 0, 0, 0] {
        return Err("VNC security handshake failed".into());
    }
    reader.send(vec![1]).await?; // ClientInit: shared
    let init = reader.take(24).await?;
    let width = u16::from_be_bytes([init[0], init[1]]);
    let height = u16::from_be_bytes([init[2], init[3]]);
    let bytes_per_pixel = usize::from(init[4] / 8).max(1);
    let name_length = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    reader.take(name_length).await?;
    // SetEncodings: raw only.
    reader.send(vec![2, 0, 0, 1, 0, 0, 0, 0]).await?;
    Ok((reader.socket, width, height, bytes_per_pixel))
}

fn vnc_response(password: &str, challenge: &[u8]) -> Vec<u8> {
    use des::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
    let mut key = [0u8; 8];
    for (slot, byte) in key.iter_mut().zip(password.bytes()) {
        *slot = byte.reverse_bits();
    }
    let cipher = des::Des::new(GenericArray::from_slice(&key));
    let mut response = challenge.to_vec();
    for block in response.chunks_mut(8) {
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
    }
    response
}

/// The RFB byte stream over websocket binary messages, whose boundaries
/// mean nothing to RFB.
struct RfbReader {
    socket: Socket,
    buffer: Vec<u8>,
    position: usize,
}

impl RfbReader {
    fn new(socket: Socket) -> RfbReader {
        RfbReader {
            socket,
            buffer: Vec::new(),
            position: 0,
        }
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), Failure> {
        self.socket.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// The next `count` bytes of the stream.
    async fn take(&mut self, count: usize) -> Result<Vec<u8>, Failure> {
        while self.buffer.len() - self.position < count {
            match self.socket.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    self.buffer.drain(..self.position);
                    self.position = 0;
                    self.buffer.extend_from_slice(&bytes);
                }
                Some(Ok(Message::Close(_))) | None => return Err("the console closed".into()),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
            }
        }
        let taken = self.buffer[self.position..self.position + count].to_vec();
        self.position += count;
        Ok(taken)
    }

    /// Skip `count` bytes (pixel data) without keeping them.
    async fn skip(&mut self, mut count: usize) -> Result<(), Failure> {
        while count > 0 {
            let available = self.buffer.len() - self.position;
            if available == 0 {
                self.take(1).await?;
                count -= 1;
                continue;
            }
            let step = available.min(count);
            self.position += step;
            count -= step;
        }
        Ok(())
    }

    /// Ask for the whole screen and read the answer; answers the bytes of
    /// pixel data received. Other server messages in between are consumed.
    async fn full_frame(
        &mut self,
        width: u16,
        height: u16,
        bytes_per_pixel: usize,
    ) -> Result<u64, Failure> {
        let mut request = vec![3, 0, 0, 0, 0, 0];
        request.extend_from_slice(&width.to_be_bytes());
        request.extend_from_slice(&height.to_be_bytes());
        self.send(request).await?;
        loop {
            let kind = self.take(1).await?[0];
            match kind {
                0 => {
                    let header = self.take(3).await?;
                    let rectangles = u16::from_be_bytes([header[1], header[2]]);
                    let mut pixels = 0u64;
                    for _ in 0..rectangles {
                        let rectangle = self.take(12).await?;
                        let w = usize::from(u16::from_be_bytes([rectangle[4], rectangle[5]]));
                        let h = usize::from(u16::from_be_bytes([rectangle[6], rectangle[7]]));
                        let encoding = i32::from_be_bytes([
                            rectangle[8],
                            rectangle[9],
                            rectangle[10],
                            rectangle[11],
                        ]);
                        if encoding != 0 {
                            return Err(format!("unexpected encoding {encoding}").into());
                        }
                        let bytes = w * h * bytes_per_pixel;
                        self.skip(bytes).await?;
                        pixels += bytes as u64;
                    }
                    return Ok(pixels);
                }
                1 => {
                    let header = self.take(5).await?;
                    let colours = usize::from(u16::from_be_bytes([header[3], header[4]]));
                    self.skip(colours * 6).await?;
                }
                2 => {}
                3 => {
                    let header = self.take(7).await?;
                    let length =
                        u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
                    self.skip(length).await?;
                }
                other => return Err(format!("unknown RFB server message {other}").into()),
            }
        }
    }
}
