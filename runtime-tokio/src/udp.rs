//! tokio's UDP sockets and TCP connect for the shared DNS loop ([`rmox_driver::dns`]).

use std::io;
use std::net::SocketAddr;

use rmox_driver::dns::{LocalBoxFuture, UdpRuntime, UdpSocket};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::TokioRt;

/// A tokio UDP socket.
pub struct TokioUdp(tokio::net::UdpSocket);

impl UdpSocket for TokioUdp {
    fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        to: SocketAddr,
    ) -> LocalBoxFuture<'a, io::Result<usize>> {
        Box::pin(self.0.send_to(buf, to))
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> LocalBoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.0.recv_from(buf))
    }
}

impl UdpRuntime for TokioRt {
    type Udp = TokioUdp;
    type TcpStream = Compat<tokio::net::TcpStream>;

    fn bind_udp(&self, addr: SocketAddr) -> LocalBoxFuture<'static, io::Result<TokioUdp>> {
        Box::pin(async move { tokio::net::UdpSocket::bind(addr).await.map(TokioUdp) })
    }

    fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> LocalBoxFuture<'static, io::Result<Self::TcpStream>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            let _ = s.set_nodelay(true);
            Ok(s.compat())
        })
    }
}
