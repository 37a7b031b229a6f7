//! Times `Verifier::verify` on a typical token against the floor it cannot beat: one pre-keyed HMAC-SHA256 over the
//! same signed bytes.
//!
//! Built for `wasm32-wasip1` and run under Node's WASI by `scripts/bench-wasm.sh` (with and without `simd128`), or
//! natively with `cargo run --release -p sharegate-shared --example wasm_verify_bench`. Rounds of the two loops are
//! interleaved, and short (a few milliseconds each), so a slow patch of the shared machine hits both loops of a
//! round alike; the ratio reported is the median of the rounds' own ratios (verify / raw of the same round), beside
//! each loop's median ns.
//!
//! Arguments: `--quick` (a few rounds, for CI: proves it builds and runs), `--iters N`, `--rounds N`.
//! The last line is machine-readable (`RESULT target=… raw_ns=… verify_ns=… ratio=…`) for the script's table.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::token::{
    Claims, IpPrefix, Minter, Permissions, Policy, RequestFacts, Resource, TAG_LEN, TokenBuf, Verifier,
};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Instant;

/// A fixed "now" (2026-11-24): the example reads no clock for token times, so every run signs the same bytes.
const NOW: u32 = 1_795_500_000;

struct Args {
    iters: u32,
    rounds: usize,
    warm_up_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        iters: 4_000,
        rounds: 301,
        warm_up_ms: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a number"))?;
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        match a.as_str() {
            "--quick" => {
                args.iters = 2_000;
                args.rounds = 3;
                args.warm_up_ms = 50;
            }
            "--iters" => args.iters = u32::try_from(num("--iters")?).map_err(|_| "--iters too large")?,
            "--rounds" => args.rounds = usize::try_from(num("--rounds")?).map_err(|_| "--rounds too large")?,
            other => return Err(format!("unknown argument {other}; use --quick, --iters N, --rounds N")),
        }
    }
    if args.iters == 0 || args.rounds == 0 {
        return Err("--iters and --rounds must be > 0".into());
    }
    Ok(args)
}

/// The claims of a typical playback link: asset scope, share, viewer, channel, campaign, a client /24, 1 h TTL.
fn typical_claims() -> Claims<'static> {
    Claims {
        token_id: *b"\x3a\x91\x0c\x5e\x77\xd2\x18\xb4\xe0\x4f\x6a\x2d",
        iat: NOW,
        nbf: NOW,
        exp: NOW + 3600,
        permissions: Permissions::PLAYBACK,
        asset: Some("demo-asset-0001".into()),
        share: Some("shr_8f3k2m9q".into()),
        viewer: Some("viewer-4b7e19c2".into()),
        channel: Some("newsletter".into()),
        campaign: Some("spring-launch-2026".into()),
        ip: IpPrefix::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 0)), 24),
        ..Claims::default()
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` for at least `ms` milliseconds: fills caches and, under a JIT (V8 tiers wasm up from a baseline compiler
/// while it runs), lets the optimised code take over before anything is measured.
fn warm_up(ms: u64, mut f: impl FnMut()) {
    let start = Instant::now();
    while start.elapsed().as_millis() < u128::from(ms) {
        for _ in 0..100 {
            f();
        }
    }
}

/// Runs `f` `iters` times and returns ns per call.
fn time_loop(iters: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn target_name() -> String {
    // `std::env::consts::OS` is empty on wasm32-wasip1, so name the wasm build by hand.
    let base = if cfg!(target_arch = "wasm32") {
        String::from("wasm32-wasip1")
    } else {
        format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
    };
    if cfg!(target_feature = "simd128") {
        base + "+simd128"
    } else {
        base
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wasm_verify_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm_verify_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let secret = [0x5a; 32];
    let policy = Policy::default();
    let ring = KeyRing::with_active(1, SecretKey::new(secret), policy.max_ttl);
    let minter = Minter::new(&ring, policy).map_err(|e| format!("minter: {e}"))?;
    let verifier = Verifier::new(&ring, policy);

    let claims = typical_claims();
    let token = minter.mint(&claims).map_err(|e| format!("mint: {e}"))?;
    let signed_len = minter.signed_len(&claims).map_err(|e| format!("signed_len: {e}"))?;
    let decoded = URL_SAFE_NO_PAD.decode(&token).map_err(|e| format!("decode: {e}"))?;
    let signed = &decoded[..decoded.len() - TAG_LEN];
    if signed.len() != signed_len {
        return Err(format!("signed bytes {} != signed_len {signed_len}", signed.len()));
    }

    let facts = RequestFacts {
        path: "/demo-asset-0001/720p/seg-00042.ts",
        resource: Resource::Segment,
        now: u64::from(NOW) + 600,
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 57))),
        country: Some(*b"DE"),
        origin: None,
    };
    let mut buf = TokenBuf::new();
    // Time the success path only: a verify that fails early would look fast.
    verifier
        .verify(&token, &facts, &mut buf)
        .map_err(|r| format!("the benchmark token does not verify: {r:?}"))?;

    // The floor: clone a pre-keyed state, hash the signed bytes, finish. No decode, no compare, no parse.
    let keyed = Hmac::<Sha256>::new_from_slice(&secret).map_err(|e| format!("hmac: {e}"))?;
    let raw = || {
        let mut m = black_box(&keyed).clone();
        m.update(black_box(signed));
        black_box(m.finalize().into_bytes());
    };
    let mut verify = || {
        let ok = verifier.verify(black_box(&token), black_box(&facts), &mut buf).is_ok();
        black_box(ok);
    };

    warm_up(args.warm_up_ms, raw);
    warm_up(args.warm_up_ms, &mut verify);

    let (mut raw_ns, mut verify_ns) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        raw_ns.push(time_loop(args.iters, raw));
        verify_ns.push(time_loop(args.iters, &mut verify));
    }
    let mut paired: Vec<f64> = verify_ns.iter().zip(&raw_ns).map(|(v, r)| v / r).collect();
    let (raw_lo, raw_hi) = (min(&raw_ns), max(&raw_ns));
    let (ver_lo, ver_hi) = (min(&verify_ns), max(&verify_ns));
    let raw_med = median(&mut raw_ns);
    let ver_med = median(&mut verify_ns);
    let ratio = median(&mut paired);

    let target = target_name();
    println!("token verify benchmark on {target}");
    println!(
        "token: {} chars, {signed_len} signed bytes; {} rounds x {} iterations, interleaved",
        token.len(),
        args.rounds,
        args.iters
    );
    println!("{:<36} {:>12} {:>10} {:>10}", "operation", "median ns/op", "min", "max");
    println!(
        "{:<36} {raw_med:>12.1} {raw_lo:>10.1} {raw_hi:>10.1}",
        "raw HMAC-SHA256 (pre-keyed clone)"
    );
    println!(
        "{:<36} {ver_med:>12.1} {ver_lo:>10.1} {ver_hi:>10.1}",
        "Verifier::verify (scope + bindings)"
    );
    println!(
        "{:<36} {ratio:>12.2}   (of the medians: {:.2})",
        "ratio verify / raw HMAC, per round",
        ver_med / raw_med
    );
    println!("RESULT target={target} raw_ns={raw_med:.1} verify_ns={ver_med:.1} ratio={ratio:.2}");
    Ok(())
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}
