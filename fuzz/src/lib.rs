//! Shared by the fuzz targets: the test credentials the corpus was signed with, and a way to
//! deliver a body in the pieces a network might cut it into.

/// The key pair the corpus requests were signed with (`fuzz/corpus/gen.py`).
pub const ACCESS_KEY: &str = "AKIAFUZZEXAMPLE00001";
pub const SECRET_KEY: &str = "fuzzSecretKey/0123456789abcdefghijklmnopq";
pub const REGION: &str = "us-east-1";

/// Cuts `data` into pieces of 1..=`max` bytes, sizes drawn from `seed` (xorshift), so that every
/// parser state can meet the end of a piece. `seed == 0` delivers it whole.
pub fn split(data: &[u8], seed: u64, max: usize) -> Vec<bytes::Bytes> {
    if seed == 0 || data.is_empty() {
        return vec![bytes::Bytes::copy_from_slice(data)];
    }
    let mut x = seed;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (x as usize % max.max(1) + 1).min(rest.len());
        out.push(bytes::Bytes::copy_from_slice(&rest[..n]));
        rest = &rest[n..];
    }
    out
}

/// Runs a future that never waits on I/O (the inputs are in memory) to completion.
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}
