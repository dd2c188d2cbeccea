//! Request bodies compressed as SDKs send them (`Content-Encoding: gzip`, `deflate`, `br`).

use std::io::Write;

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("compress in memory");
    e.finish().expect("compress in memory")
}

/// `deflate` as HTTP means it: zlib-wrapped.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("compress in memory");
    e.finish().expect("compress in memory")
}

pub fn br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).expect("compress in memory");
    }
    out
}
