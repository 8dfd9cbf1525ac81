//! glommio's UDP sockets and TCP connect for the shared DNS loop ([`rmox_driver::dns`]).

use std::io;
use std::net::SocketAddr;

use rmox_driver::dns::{LocalBoxFuture, UdpRuntime, UdpSocket};

use crate::GlommioRt;

/// A glommio UDP socket (io_uring).
pub struct GlommioUdp(glommio::net::UdpSocket);

impl UdpSocket for GlommioUdp {
    fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        to: SocketAddr,
    ) -> LocalBoxFuture<'a, io::Result<usize>> {
        Box::pin(async move { self.0.send_to(buf, to).await.map_err(io::Error::from) })
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> LocalBoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(async move { self.0.recv_from(buf).await.map_err(io::Error::from) })
    }
}

impl UdpRuntime for GlommioRt {
    type Udp = GlommioUdp;
    type TcpStream = glommio::net::TcpStream;

    fn bind_udp(&self, addr: SocketAddr) -> LocalBoxFuture<'static, io::Result<GlommioUdp>> {
        Box::pin(async move {
            glommio::net::UdpSocket::bind(addr)
                .map(GlommioUdp)
                .map_err(io::Error::from)
        })
    }

    fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> LocalBoxFuture<'static, io::Result<Self::TcpStream>> {
        Box::pin(async move {
            let s = glommio::net::TcpStream::connect(addr)
                .await
                .map_err(io::Error::from)?;
            let _ = s.set_nodelay(true);
            Ok(s)
        })
    }
}
