//! async-net's UDP sockets and TCP connect for the shared DNS loop ([`rmox_driver::dns`]).

use std::io;
use std::net::SocketAddr;

use rmox_driver::dns::{LocalBoxFuture, UdpRuntime, UdpSocket};

use crate::SmolRt;

/// An async-net UDP socket.
pub struct SmolUdp(async_net::UdpSocket);

impl UdpSocket for SmolUdp {
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

impl UdpRuntime for SmolRt {
    type Udp = SmolUdp;
    type TcpStream = async_net::TcpStream;

    fn bind_udp(&self, addr: SocketAddr) -> LocalBoxFuture<'static, io::Result<SmolUdp>> {
        Box::pin(async move { async_net::UdpSocket::bind(addr).await.map(SmolUdp) })
    }

    fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> LocalBoxFuture<'static, io::Result<Self::TcpStream>> {
        Box::pin(async move {
            let s = async_net::TcpStream::connect(addr).await?;
            let _ = s.set_nodelay(true);
            Ok(s)
        })
    }
}
