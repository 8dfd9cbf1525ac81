//! SMTP wire layer throughput: command parsing, DATA reading and dot-stuffing.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rmox_core::smtp::{dot_stuff, Command, DataReader};
use std::hint::black_box;

const LINES: &[&[u8]] = &[
    b"EHLO mail.example.org",
    b"MAIL FROM:<sender.name+tag@example.org> SIZE=123456 BODY=8BITMIME",
    b"RCPT TO:<recipient@example.com>",
    b"RCPT TO:<other@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;other@example.com",
    b"DATA",
    b"MAIL FROM:<\"quoted local\"@example.org> SMTPUTF8 ENVID=abc+2Bdef",
    b"RSET",
    b"QUIT",
];

/// A message of `size` bytes with a CRLF every 78 bytes and some lines starting with a dot.
fn message(size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size + 80);
    let mut n = 0u32;
    while m.len() < size {
        n += 1;
        if n % 10 == 0 {
            m.push(b'.');
        }
        let fill = 76 - (m.len() % 78).min(76);
        m.extend((0..fill).map(|i| b'a' + (i % 26) as u8));
        m.extend_from_slice(b"\r\n");
    }
    m
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("smtp");

    let total: usize = LINES.iter().map(|l| l.len()).sum();
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("command_parse", |b| {
        b.iter(|| {
            for l in LINES {
                let _ = black_box(Command::parse(black_box(l)));
            }
        })
    });

    let msg = message(64 * 1024);
    let mut wire = Vec::new();
    dot_stuff(&msg, &mut wire);
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("data_reader_64k", |b| {
        let mut out = Vec::with_capacity(msg.len());
        b.iter(|| {
            out.clear();
            let mut r = DataReader::new(1 << 30);
            black_box(r.feed(black_box(&wire), &mut out));
        })
    });

    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("dot_stuff_64k", |b| {
        let mut out = Vec::with_capacity(wire.len());
        b.iter(|| {
            out.clear();
            dot_stuff(black_box(&msg), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
