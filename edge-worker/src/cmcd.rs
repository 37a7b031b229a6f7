//! Common Media Client Data (CTA-5004): what a player says about its session with each request.
//!
//! Read from the `CMCD` query parameter (URL-encoded, the mode hls.js uses by default: headers would cost a CORS
//! preflight) or from the `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers. Only the keys
//! analytics uses are kept: `sid` (session id; our player sends its view id), `cid` (content id), `ot` (object type),
//! `bs` (buffer starvation: the player stalled since its last request), `su` (startup: the object is needed urgently),
//! `bl` (buffer length, ms), `br` (encoded bitrate, kbps), `mtp` (measured throughput, kbps).
//!
//! CMCD is the client's word: it never reaches the origin request or the cache key (the engine keeps only the LL-HLS
//! directives of a query), and whatever arrives is bounded here — strings cut to [`MAX_STRING`] characters of
//! `[A-Za-z0-9._~:-]` (others become `_`), integers above [`MAX_INT`] dropped, unknown keys and malformed pairs
//! ignored, at most [`MAX_PAIRS`] pairs read. Nothing here allocates unless a string is kept.

use alloc::string::String;

/// Longest `sid`/`cid` kept, characters (CTA-5004 allows 64).
pub const MAX_STRING: usize = 64;
/// Largest integer kept.
pub const MAX_INT: u64 = 1_000_000_000;
/// Most key/value pairs read from one request.
pub const MAX_PAIRS: usize = 64;
/// Longest raw value looked at (a quoted 64-character string with escapes fits).
const MAX_VALUE: usize = 160;

/// The request headers CMCD may ride in, in the order adapters pass them.
pub const HEADERS: [&str; 4] = ["cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"];

/// Object types (`ot`), as the static tokens kept.
const OBJECT_TYPES: [&str; 9] = ["m", "a", "v", "av", "i", "c", "tt", "k", "o"];

/// The CMCD a request carried (the keys analytics uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmcd {
    /// Session id.
    pub sid: Option<String>,
    /// Content id.
    pub cid: Option<String>,
    /// Object type.
    pub ot: Option<&'static str>,
    /// Buffer starvation since the previous request.
    pub bs: bool,
    /// Startup (or seek, or recovery): needed urgently.
    pub su: bool,
    /// Buffer length, ms.
    pub bl: Option<u64>,
    /// Encoded bitrate, kbps.
    pub br: Option<u64>,
    /// Measured throughput, kbps.
    pub mtp: Option<u64>,
}

impl Cmcd {
    /// Whether any kept key was present.
    pub fn is_empty(&self) -> bool {
        *self == Cmcd::default()
    }
}

/// The flags that decide whether a segment request is an event, read without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// The request carried CMCD at all.
    pub present: bool,
    /// `su`.
    pub su: bool,
    /// `bs`.
    pub bs: bool,
    /// The query is the `CMCD` parameter alone (what hls.js sends with every segment): no LL-HLS directive to keep.
    pub alone: bool,
}

/// The raw (still URL-encoded) value of the `CMCD` query parameter.
pub fn query_value(query: Option<&str>) -> Option<&str> {
    let q = query?;
    // hls.js sends it first and alone: one vectorised look for `&` settles that.
    if let Some(v) = q.strip_prefix("CMCD=")
        && memchr::memchr(b'&', v.as_bytes()).is_none()
    {
        return Some(v);
    }
    q.split('&').find_map(|p| p.strip_prefix("CMCD="))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The bytes of `raw`, percent-decoded when `encoded` (a bad escape passes through as is).
fn bytes(raw: &str, encoded: bool) -> impl Iterator<Item = u8> + '_ {
    let b = raw.as_bytes();
    let mut i = 0;
    core::iter::from_fn(move || {
        let c = *b.get(i)?;
        if encoded
            && c == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(|x| hex(*x)), b.get(i + 2).and_then(|x| hex(*x)))
        {
            i += 3;
            return Some(h << 4 | l);
        }
        i += 1;
        Some(c)
    })
}

/// Calls `f(key, value)` for each `key[=value]` pair of a CMCD list (commas outside quotes separate pairs).
fn pairs(raw: &str, encoded: bool, f: &mut impl FnMut(&[u8], &[u8])) {
    let mut key = [0u8; 8];
    let mut val = [0u8; MAX_VALUE];
    let (mut kl, mut vl) = (0usize, 0usize);
    let (mut in_val, mut quoted, mut escaped, mut over) = (false, false, false, false);
    let mut count = 0;
    let mut emit = |key: &[u8], val: &[u8], over: bool, count: &mut usize| {
        if !over && !key.is_empty() && *count < MAX_PAIRS {
            f(key, val);
        }
        *count += 1;
    };
    for c in bytes(raw, encoded) {
        if count >= MAX_PAIRS {
            return;
        }
        if in_val && quoted {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                quoted = false;
            }
        } else if c == b',' {
            emit(&key[..kl], &val[..vl], over, &mut count);
            (kl, vl, in_val, over) = (0, 0, false, false);
            continue;
        } else if c == b'=' && !in_val {
            in_val = true;
            continue;
        } else if c == b'"' && in_val && vl == 0 {
            quoted = true;
        }
        let (buf, len): (&mut [u8], &mut usize) = if in_val {
            (&mut val, &mut vl)
        } else {
            (&mut key, &mut kl)
        };
        if *len < buf.len() {
            buf[*len] = c;
            *len += 1;
        } else {
            over = true;
        }
    }
    emit(&key[..kl], &val[..vl], over, &mut count);
}

fn integer(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    (n <= MAX_INT).then_some(n)
}

/// A quoted string's content, cut and cleaned.
fn string(v: &[u8]) -> Option<String> {
    let inner = v.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut out = String::with_capacity(inner.len().min(MAX_STRING));
    let mut escaped = false;
    for &c in inner {
        if !escaped && c == b'\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        if out.len() == MAX_STRING {
            break;
        }
        out.push(
            if c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b':' | b'-') {
                c as char
            } else {
                '_'
            },
        );
    }
    (!out.is_empty()).then_some(out)
}

/// Every CMCD source of a request: the query value (encoded), then the headers.
fn sources<'a>(query: Option<&'a str>, headers: &'a [Option<&'a str>; 4]) -> impl Iterator<Item = (&'a str, bool)> {
    query_value(query)
        .map(|q| (q, true))
        .into_iter()
        .chain(headers.iter().flatten().map(|h| (*h, false)))
}

/// One vectorised pass over an URL-encoded CMCD list (and, for the query parameter, what follows it) for the bytes
/// `&`, `b` and `u` (rare in a player's CMCD: `bl`, `br` and the flags themselves): whether `su` or `bs` may be among
/// its keys (`false` only when they surely are not), and where the list ends (the first `&`). A `b` or `u` is looked
/// at as part of a key `bs` or `su` standing after a separator (`%2C` in either case, a literal comma, or the start)
/// and followed by one, by `%3D`/`=` (a value), by `&` or by the end. Anything it cannot rule out takes the full
/// read, so a flag is never missed (a property test holds it to the full read).
#[inline(always)]
fn scan(raw: &str) -> (bool, Option<usize>) {
    let b = raw.as_bytes();
    let sep_before = |k: usize| {
        k == 0 || b.get(k - 1) == Some(&b',') || matches!(b.get(k.wrapping_sub(3)..k), Some([b'%', b'2', b'C' | b'c']))
    };
    let sep_after = |k: usize| {
        k == b.len()
            || matches!(b.get(k), Some(b',' | b'=' | b'&'))
            || matches!(
                b.get(k..k + 3),
                Some([b'%', b'2', b'C' | b'c'] | [b'%', b'3', b'D' | b'd'])
            )
    };
    let mut may = false;
    for i in memchr::memchr3_iter(b'&', b'b', b'u', b) {
        may |= match b.get(i) {
            Some(b'&') => return (may, Some(i)),
            // `bs` starting here.
            Some(b'b') => b.get(i + 1) == Some(&b's') && sep_before(i) && sep_after(i + 2),
            // `su` ending here.
            _ => i >= 1 && b.get(i - 1) == Some(&b's') && sep_before(i - 1) && sep_after(i + 1),
        };
    }
    (may, None)
}

/// The flags, without allocating. Most segment requests carry neither key: one vectorised pass ([`scan`]) skips the
/// pair-by-pair read for them.
#[inline]
pub fn flags(query: Option<&str>, headers: &[Option<&str>; 4]) -> Flags {
    let mut fl = Flags::default();
    let mut read = |raw: &str, encoded: bool| {
        pairs(raw, encoded, &mut |k, v| match k {
            b"su" if v.is_empty() || v == b"true" => fl.su = true,
            b"bs" if v.is_empty() || v == b"true" => fl.bs = true,
            _ => {}
        });
    };
    let mut present = false;
    let mut alone = false;
    match query.and_then(|q| q.strip_prefix("CMCD=")) {
        // The parameter first (hls.js): one scan finds both the flags and where the value ends.
        Some(rest) => {
            present = true;
            let (may, end) = scan(rest);
            alone = end.is_none();
            if may {
                read(rest.get(..end.unwrap_or(rest.len())).unwrap_or(rest), true);
            }
        }
        None => {
            if let Some(v) = query_value(query) {
                present = true;
                if scan(v).0 {
                    read(v, true);
                }
            }
        }
    }
    // Headers are not URL-encoded: read in full (they are short, and rarer than the query).
    for h in headers.iter().flatten() {
        present = true;
        read(h, false);
    }
    fl.present = present;
    fl.alone = alone;
    fl
}

/// Whether a request may carry CMCD at all (cheap: a substring test and four header slots).
pub fn maybe_present(query: Option<&str>, headers: &[Option<&str>; 4]) -> bool {
    query.is_some_and(|q| q.contains("CMCD=")) || headers.iter().any(Option::is_some)
}

/// The kept keys.
pub fn parse(query: Option<&str>, headers: &[Option<&str>; 4]) -> Cmcd {
    let mut c = Cmcd::default();
    for (raw, encoded) in sources(query, headers) {
        pairs(raw, encoded, &mut |k, v| {
            let flag = v.is_empty() || v == b"true";
            match k {
                b"sid" => c.sid = string(v).or(c.sid.take()),
                b"cid" => c.cid = string(v).or(c.cid.take()),
                b"ot" => c.ot = OBJECT_TYPES.iter().find(|t| t.as_bytes() == v).copied().or(c.ot),
                b"bs" => c.bs |= flag,
                b"su" => c.su |= flag,
                b"bl" => c.bl = integer(v).or(c.bl),
                b"br" => c.br = integer(v).or(c.br),
                b"mtp" => c.mtp = integer(v).or(c.mtp),
                _ => {}
            }
        });
    }
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;

    const NONE: [Option<&str>; 4] = [None; 4];

    #[test]
    fn hls_js_query_mode() {
        let sid = "-3zov1ksPVmUaxB9LQ.-YRsh2F4_OyRCLxtPBDl";
        let q = format!(
            "foo=1&CMCD=bl%3D21300%2Cbr%3D3200%2Cbs%2Ccid%3D%22demo%22%2Cd%3D4004%2Cdl%3D18500%2Cmtp%3D48100%2Cnor%3D%22..%252Fseg_2.ts%22%2Cot%3Dav%2Csid%3D%22{sid}%22%2Csu%2Ctb%3D6000"
        );
        let c = parse(Some(&q), &NONE);
        assert_eq!(c.sid.as_deref(), Some(sid));
        assert_eq!(c.cid.as_deref(), Some("demo"));
        assert_eq!(c.ot, Some("av"));
        assert!(c.bs && c.su);
        assert_eq!((c.bl, c.br, c.mtp), (Some(21300), Some(3200), Some(48100)));
        assert_eq!(
            flags(Some(&q), &NONE),
            Flags {
                present: true,
                su: true,
                bs: true,
                alone: false,
            }
        );
        // First and alone, then followed by another parameter.
        let first = String::from(q.trim_start_matches("foo=1&"));
        let f = flags(Some(&first), &NONE);
        assert!(f.su && f.bs && f.alone);
        let f = flags(Some(&format!("{first}&_HLS_msn=3")), &NONE);
        assert!(f.su && f.bs && !f.alone);
    }

    #[test]
    fn header_mode() {
        let h = [
            Some("bl=500,br=800"),
            Some("ot=v"),
            Some("bs"),
            Some("cid=\"a,b\",sid=\"s1\""),
        ];
        let c = parse(None, &h);
        assert_eq!(
            (c.bl, c.br, c.ot, c.bs, c.su),
            (Some(500), Some(800), Some("v"), true, false)
        );
        assert_eq!(
            c.cid.as_deref(),
            Some("a_b"),
            "a comma inside quotes is part of the string"
        );
        assert_eq!(c.sid.as_deref(), Some("s1"));
    }

    #[test]
    fn flags_in_every_spelling() {
        let f = |q: &str| {
            let fl = flags(Some(q), &NONE);
            (fl.su, fl.bs)
        };
        // Start, middle and end; upper- and lower-case escaped commas; a literal comma.
        assert_eq!(f("CMCD=su%2Cbl%3D1"), (true, false));
        assert_eq!(f("CMCD=bl%3D1%2Cbs%2Cbr%3D2"), (false, true));
        assert_eq!(f("CMCD=bl%3D1%2csu"), (true, false));
        assert_eq!(f("CMCD=bl%3D1%2cbs%2cbr%3D2"), (false, true));
        assert_eq!(f("CMCD=bl%3D1,su"), (true, false));
        // Look-alikes: a value ending in s, a sid holding `bs`, a quoted sid holding `su,`.
        assert_eq!(f("CMCD=sf%3Ds%2Cbl%3D1"), (false, false));
        assert_eq!(f("CMCD=sid%3D%22abs%22%2Cot%3Dv"), (false, false));
        assert_eq!(f("CMCD=sid%3D%22x%2Csu%2Cy%22%2Cot%3Dv"), (false, false));
        // The canonical spellings agree with the full read.
        for q in ["CMCD=bs", "CMCD=su%2Cbs", "CMCD=bl%3D1%2Csu", "CMCD=bsu%2C"] {
            let c = parse(Some(q), &NONE);
            assert_eq!(f(q), (c.su, c.bs), "{q}");
        }
    }

    #[test]
    fn absent_and_hostile_input() {
        assert!(parse(None, &NONE).is_empty());
        assert!(!flags(Some("a=b&CMCDX=1"), &NONE).present);
        assert!(!maybe_present(Some("x=1"), &NONE));
        let long = format!(
            "sid=\"{}\",br={},bl=-1,mtp=1e9,ot=zz,su=false",
            "x".repeat(500),
            u64::MAX
        );
        let c = parse(None, &[Some(&long), None, None, None]);
        assert_eq!(c.sid, None, "an overlong value is dropped");
        assert_eq!((c.br, c.bl, c.mtp, c.ot, c.su), (None, None, None, None, false));
        let odd = "sid=\"a\\\"b\",cid=\"<script>\",%zz,==,,\"\",bs=true";
        let c = parse(None, &[Some(odd), None, None, None]);
        assert_eq!(c.sid.as_deref(), Some("a_b"));
        assert_eq!(c.cid.as_deref(), Some("_script_"));
        assert!(c.bs);
        // Many pairs: only the first MAX_PAIRS are read.
        let many: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let many = format!("{},bs", many.join(","));
        assert!(!parse(None, &[Some(&many), None, None, None]).bs);
    }

    proptest::proptest! {
        // The fast path only skips reads that would find nothing: flags always equal the full parse's, for CMCD
        // lists built from real keys, look-alikes and every separator spelling.
        #[test]
        fn the_flag_scan_never_misses(
            pairs in proptest::collection::vec(proptest::sample::select(alloc::vec![
                "su", "bs", "su%3Dtrue", "bs%3Dtrue", "su%3Dfalse", "sf%3Ds", "sid%3D%22bsu%2Csu%22", "bl%3D100",
                "ot%3Dav", "st%3Dv", "nor%3D%22x%22", "bsu", "sus", "d%3D4004", "su=true", "bs=true", "su=x",
                "sid%3D%22bs,su%22", "%2Csu",
            ]), 0..8),
            seps in proptest::collection::vec(proptest::sample::select(alloc::vec!["%2C", "%2c", ","]), 8),
        ) {
            let mut raw = alloc::string::String::new();
            for (i, p) in pairs.iter().enumerate() {
                if i > 0 {
                    raw.push_str(seps[i % seps.len()]);
                }
                raw.push_str(p);
            }
            let q = alloc::format!("CMCD={raw}");
            let fast = flags(Some(&q), &NONE);
            let full = parse(Some(&q), &NONE);
            proptest::prop_assert_eq!((fast.su, fast.bs), (full.su, full.bs), "{}", q);
        }
    }

    #[test]
    fn never_panics_on_any_bytes() {
        // A deterministic walk over short byte strings built from the characters that matter to the grammar.
        let alphabet = b"s=\",\\%2C3Dbu1a";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 40) as usize;
            let s: String = (0..n)
                .map(|i| alphabet[((seed >> (i % 60)) as usize + i) % alphabet.len()] as char)
                .collect();
            let q = format!("CMCD={s}");
            let c = parse(Some(&q), &[Some(&s), None, None, None]);
            assert!(c.sid.as_ref().is_none_or(|v| v.len() <= MAX_STRING));
            let _ = flags(Some(&q), &NONE);
        }
    }
}
