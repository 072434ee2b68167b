//! A TCP proxy a test controls, put between one operator and one backend of
//! the shared stack: cutting it makes the backend unreachable for that
//! operator only (connections refused, open ones closed), while every other
//! test keeps the real backend.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards every connection to its upstream until [`TcpProxy::cut`];
/// forwards again after [`TcpProxy::restore`], on the same address.
pub struct TcpProxy {
    address: SocketAddr,
    /// Whether the test wants traffic through.
    open: watch::Sender<bool>,
    /// Whether the proxy listens, as the serving task reports it.
    listening: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy on a free local port forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy's port")?;
        let address = listener.local_addr()?;
        let (open, open_rx) = watch::channel(true);
        let (listening_tx, listening) = watch::channel(true);
        let task = tokio::spawn(serve(listener, upstream.to_string(), open_rx, listening_tx));
        Ok(TcpProxy {
            address,
            open,
            listening,
            task,
        })
    }

    /// A proxy in front of the server of `url` (`http://host:port/...`).
    pub async fn in_front_of(url: &str) -> Result<TcpProxy> {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
        let host = parsed.host_str().context("the URL has no host")?;
        let port = parsed
            .port_or_known_default()
            .context("the URL has no port")?;
        TcpProxy::start(&format!("{host}:{port}")).await
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> Result<String> {
        let mut parsed = reqwest::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
        parsed
            .set_ip_host(self.address.ip())
            .map_err(|()| anyhow::anyhow!("{url} cannot take an IP host"))?;
        parsed
            .set_port(Some(self.address.port()))
            .map_err(|()| anyhow::anyhow!("{url} cannot take a port"))?;
        Ok(parsed.to_string())
    }

    /// Closes open connections and refuses new ones; returns once the
    /// port no longer listens.
    pub async fn cut(&self) {
        self.open.send_replace(false);
        let mut listening = self.listening.clone();
        let _ = listening.wait_for(|l| !*l).await;
    }

    /// Forwards again; returns once the port listens.
    pub async fn restore(&self) {
        self.open.send_replace(true);
        let mut listening = self.listening.clone();
        let _ = listening.wait_for(|l| *l).await;
    }

    pub fn is_cut(&self) -> bool {
        !*self.open.borrow()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    upstream: String,
    mut open: watch::Receiver<bool>,
    listening: watch::Sender<bool>,
) {
    let address = listener
        .local_addr()
        .expect("a bound listener has an address");
    let mut listener = Some(listener);
    loop {
        match listener.take() {
            Some(bound) => {
                listening.send_replace(true);
                let mut closing = open.clone();
                loop {
                    tokio::select! {
                        accepted = bound.accept() => {
                            if let Ok((client, _)) = accepted {
                                tokio::spawn(forward(client, upstream.clone(), open.clone()));
                            }
                        }
                        _ = closing.wait_for(|o| !*o) => break,
                    }
                }
                // Dropping the listener closes the port: connections are refused.
                drop(bound);
                listening.send_replace(false);
            }
            None => {
                if open.wait_for(|o| *o).await.is_err() {
                    return;
                }
                listener = rebind(address).await;
            }
        }
    }
}

/// The same port again (free since it was closed, unless someone took it).
async fn rebind(address: SocketAddr) -> Option<TcpListener> {
    for _ in 0..50 {
        let socket = TcpSocket::new_v4().ok()?;
        socket.set_reuseaddr(true).ok()?;
        if socket.bind(address).is_ok()
            && let Ok(listener) = socket.listen(1024)
        {
            return Some(listener);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

async fn forward(mut client: TcpStream, upstream: String, mut open: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        // Cut: both ends close at once.
        _ = open.wait_for(|o| !*o) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers each connection with what it read, once.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(address: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(b"ping").await?;
        let mut answer = vec![0u8; 4];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn forwards_then_refuses_then_forwards_again_on_the_same_port() {
        let upstream = echo().await;
        let proxy = TcpProxy::start(&upstream.to_string()).await.unwrap();
        assert_eq!(round_trip(proxy.address()).await.unwrap(), b"ping");

        // An open connection is closed by the cut.
        let mut open = TcpStream::connect(proxy.address()).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut answer = [0u8; 4];
        open.read_exact(&mut answer).await.unwrap();
        proxy.cut().await;
        assert!(proxy.is_cut());
        let mut rest = Vec::new();
        let closed = open.read_to_end(&mut rest).await;
        assert!(
            closed.is_err() || rest.is_empty(),
            "the open connection ends"
        );
        let refused = TcpStream::connect(proxy.address()).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

        proxy.restore().await;
        assert!(!proxy.is_cut());
        assert_eq!(round_trip(proxy.address()).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn urls_point_at_the_proxy() {
        let proxy = TcpProxy::in_front_of("http://127.0.0.1:1/admin/v2/")
            .await
            .unwrap();
        let port = proxy.address().port();
        assert_eq!(
            proxy.url("http://localhost:18080/admin/v2/").unwrap(),
            format!("http://127.0.0.1:{port}/admin/v2/")
        );
        assert!(TcpProxy::in_front_of("not a url").await.is_err());
    }
}
