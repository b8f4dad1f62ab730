//! Bounded random-input test that runs in CI: random and mutated-valid byte strings go through
//! fresh decoders of every kind, whole and byte by byte. Nothing may panic, and one `decode` call
//! may not allocate more than a small multiple of its input: a peer must not be able to make the
//! broker reserve memory by merely claiming large lengths or counts.

use crate::codec_strategies;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use sharq::codec::{encode, encoded_len, Decoder};
use sharq::packet::{Packet, ProtocolVersion};

/// Counts the bytes one thread allocates while it measures (see `measured`), and their
/// high-water mark. Per thread, because this test shares its process with every other
/// integration test: a process-wide count would charge their allocations to the decoder.
struct Counting;

// This thread's measurement: whether one is under way, the bytes it holds now and at most
// since it began. Const-initialised `Cell`s with no destructor, so the allocator may read them
// without allocating.
thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: an allocation during thread teardown finds the slots gone and is not counted.
    let _ = MEASURING.try_with(|on| {
        if on.get() {
            let _ = LIVE.try_with(|live| {
                let now = live.get() + delta;
                live.set(now);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
            });
        }
    });
}

/// Runs `f` and returns what it returned with the most bytes this thread held at once, beyond
/// what it held before.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|live| live.set(0));
    PEAK.with(|peak| peak.set(0));
    MEASURING.with(|on| on.set(true));
    let out = f();
    MEASURING.with(|on| on.set(false));
    (out, usize::try_from(PEAK.with(Cell::get)).unwrap_or(0))
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// xorshift64*: deterministic, so a failure names its seed and iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

const ITERATIONS: usize = 200_000;
/// Per decode call: Vec doubling over entries of at most 40-64 bytes that each cost at least
/// 3 input bytes, plus the frame's shared header.
const FACTOR: usize = 64;
const SLACK: usize = 4096;

fn corpus() -> Vec<Vec<u8>> {
    let mut runner = TestRunner::deterministic();
    let mut out = Vec::new();
    for v in [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ] {
        for _ in 0..100 {
            for strategy in [
                codec_strategies::packet(v),
                codec_strategies::connect(v).boxed(),
            ] {
                let p = strategy.new_tree(&mut runner).unwrap().current();
                let mut buf = BytesMut::new();
                encode(&p, v, &mut buf).unwrap();
                out.push(buf.to_vec());
            }
        }
    }
    out
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.byte();
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            2 if !input.is_empty() => input.truncate(rng.below(input.len())),
            3 => {
                let i = rng.below(input.len() + 1);
                input.insert(i, rng.byte());
            }
            // Big claimed lengths: 0xff runs in lengths and counts.
            4 if !input.is_empty() => {
                let i = rng.below(input.len());
                for b in input.iter_mut().skip(i).take(1 + rng.below(4)) {
                    *b = 0xff;
                }
            }
            _ => input.extend((0..rng.below(8)).map(|_| rng.byte())),
        }
    }
}

fn decoders(rng: &mut Rng) -> Decoder {
    let max = if rng.below(2) == 0 { 64 } else { 1 << 20 };
    match rng.below(4) {
        0 => Decoder::new(max),
        1 => Decoder::with_version(ProtocolVersion::V3_1, max),
        2 => Decoder::with_version(ProtocolVersion::V3_1_1, max),
        _ => Decoder::with_version(ProtocolVersion::V5, max),
    }
}

/// One decode call under the allocation bound; whatever decodes must survive a re-encode.
fn checked_decode(d: &mut Decoder, buf: &mut BytesMut, input_len: usize, what: &str) -> bool {
    let (result, used) = measured(|| d.decode(buf));
    assert!(
        used <= FACTOR * input_len + SLACK,
        "{what}: {used} bytes allocated for {input_len} input bytes"
    );
    let Ok(Some(packet)) = result else {
        return false;
    };
    let version = d.version().unwrap_or(ProtocolVersion::V5);
    let mut out = BytesMut::new();
    if encode(&packet, version, &mut out).is_ok() {
        assert_eq!(Ok(out.len()), encoded_len(&packet, version), "{what}");
        let mut again = match &packet {
            Packet::Connect(_) => Decoder::new(u32::MAX),
            _ => Decoder::with_version(version, u32::MAX),
        };
        let decoded = again
            .decode(&mut out)
            .unwrap_or_else(|e| panic!("{what}: re-encoding of {packet:?} fails: {e}"));
        assert_eq!(decoded.as_ref(), Some(&packet), "{what}");
    }
    true
}

#[test]
fn random_and_mutated_inputs_never_panic_and_stay_bounded() {
    // The measure itself: an allocation on this thread is seen, one freed before the end still
    // counts at its peak, and another thread's allocations are not charged here.
    let (_, seen) = measured(|| drop(std::hint::black_box(vec![0u8; 100_000])));
    assert!(
        seen >= 100_000,
        "the allocation counter saw {seen} bytes of 100,000"
    );
    let (_, elsewhere) = measured(|| {
        std::thread::spawn(|| drop(std::hint::black_box(vec![0u8; 100_000])))
            .join()
            .unwrap()
    });
    assert!(
        elsewhere < 100_000,
        "another thread's allocation was charged: {elsewhere} bytes"
    );
    let corpus = corpus();
    let mut rng = Rng(0x5eed_c0de_d00d_f00d);
    let mut decoded = 0usize;
    for i in 0..ITERATIONS {
        let mut input = if rng.below(3) == 0 {
            let mut v: Vec<u8> = (0..rng.below(64)).map(|_| rng.byte()).collect();
            if let Some(b) = v.first_mut() {
                // Mostly plausible first bytes, so the body parsers are reached.
                if rng.below(2) == 0 {
                    *b = (*b & 0xf0) | [0, 0, 2][rng.below(3)];
                }
            }
            v
        } else {
            corpus[rng.below(corpus.len())].clone()
        };
        if rng.below(8) != 0 {
            mutate(&mut rng, &mut input);
        }
        let what = format!("iteration {i}, input {input:02x?}");
        let len = input.len();

        let mut d = decoders(&mut rng);
        let mut buf = BytesMut::from(&input[..]);
        while checked_decode(&mut d, &mut buf, len, &what) {
            decoded += 1;
        }

        if i % 8 == 0 {
            let mut d = decoders(&mut rng);
            let mut buf = BytesMut::with_capacity(len);
            for &b in &input {
                buf.extend_from_slice(&[b]);
                while checked_decode(&mut d, &mut buf, len, &what) {}
            }
        }
    }
    eprintln!("{decoded} of {ITERATIONS} inputs decoded to at least one packet");
    // Guards against a generator that only ever produces garbage.
    assert!(decoded > ITERATIONS / 20, "only {decoded} packets decoded");
}
