//! What the end-to-end tests share: the edge conformance suite's runner, and helpers to start real processes.
//!
//! The suite (`tests/conformance/cases.json`) is data: token specs, a revocation state, and requests with the
//! decisions every adapter must give. Tokens are minted at run time relative to the clock, so the same file drives
//! the pure engine (`conformance_engine`), the native edge over HTTP (`conformance_native`), and the Cloudflare and
//! Fastly adapters under their local runtimes.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use sharegate_edge::config::parse_signing_keys;
use sharegate_shared::keys::SecretKey;
use sharegate_shared::revocation::{
    IssuedToken, RevokedToken, ScopeKind, SnapshotParams, StateKey, Watermark, build_snapshot,
};
use sharegate_shared::token::{Claims, Countries, IpPrefix, Minter, Permissions, Policy, Text};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

pub mod control_plane;
pub mod origin;
pub mod process;
pub mod replay;
pub mod viceroy;
pub mod wrangler;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The conformance suite's directory.
pub fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// The suite, loaded.
pub struct Suite {
    /// The whole JSON document.
    pub doc: Value,
}

/// One HTTP request of a case, with placeholders expanded.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method.
    pub method: String,
    /// Path (may include `/t/<token>`).
    pub path: String,
    /// Query without `?`.
    pub query: Option<String>,
    /// Extra headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Simulated client address.
    pub client_ip: Option<String>,
    /// Simulated client country.
    pub country: Option<String>,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

/// Minted tokens by name, and the secrets needed to expand placeholders.
pub struct Minted {
    /// Token strings by name.
    pub tokens: HashMap<String, String>,
    watermark_key: SecretKey,
}

fn perms(v: Option<&Value>) -> Permissions {
    let Some(list) = v.and_then(Value::as_array) else {
        return Permissions::PLAYBACK;
    };
    let mut p = Permissions(0);
    for name in list.iter().filter_map(Value::as_str) {
        p = p.union(match name {
            "multivariant_playlist" => Permissions::MULTIVARIANT,
            "media_playlist" => Permissions::MEDIA,
            "segment" => Permissions::SEGMENT,
            "init" => Permissions::INIT,
            "key" => Permissions::KEY,
            _ => Permissions::DOWNLOAD,
        });
    }
    p
}

/// A deterministic token id from the token's name, so the state can revoke tokens by name.
pub fn token_id(name: &str) -> [u8; 12] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(name.as_bytes());
    let mut id = [0u8; 12];
    id.copy_from_slice(&h[..12]);
    id
}

impl Suite {
    /// Load `tests/conformance/cases.json`.
    pub fn load() -> Result<Suite> {
        let text = std::fs::read_to_string(conformance_dir().join("cases.json"))?;
        Ok(Suite {
            doc: serde_json::from_str(&text)?,
        })
    }

    /// The cases.
    pub fn cases(&self) -> &[Value] {
        self.doc["cases"].as_array().map_or(&[], Vec::as_slice)
    }

    fn key(&self, name: &str) -> &str {
        self.doc["keys"][name].as_str().unwrap_or("")
    }

    /// The engine settings for a case: the suite's keys plus the case's overrides.
    pub fn settings(&self, case: &Value) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("SHAREGATE_SIGNING_KEYS".into(), self.key("signing").into());
        m.insert("SHAREGATE_STATE_KEY".into(), self.key("state").into());
        m.insert("SHAREGATE_WATERMARK_KEY".into(), self.key("watermark").into());
        if let Some(over) = case.get("config").and_then(Value::as_object) {
            for (k, v) in over {
                m.insert(k.clone(), v.as_str().unwrap_or("").to_string());
            }
        }
        m
    }

    /// Mint every token of the suite at `now`.
    pub fn mint(&self, now: u64) -> Result<Minted> {
        let ring = parse_signing_keys(self.key("signing"), 86_400)?;
        let foreign = parse_signing_keys(self.key("foreign"), 86_400)?;
        let mut tokens = HashMap::new();
        let specs = self.doc["tokens"].as_object().context("tokens")?;
        for (name, spec) in specs {
            let get = |k: &str| spec.get(k).and_then(Value::as_str);
            let num = |k: &str| spec.get(k).and_then(Value::as_i64).unwrap_or(0);
            let iat = u32::try_from(now as i64 + num("iat_offset"))?;
            let nbf = iat + u32::try_from(num("nbf_offset"))?;
            let exp = nbf + u32::try_from(num("ttl"))?;
            let key = num("key");
            let lenient = spec.get("lenient_mint").and_then(Value::as_bool).unwrap_or(false);
            let policy = Policy {
                leeway: 60,
                max_ttl: if lenient { 7 * 86_400 } else { 86_400 },
            };
            let minter = match key {
                9 => Minter::new(&foreign, policy),
                2 => {
                    // Sign with the `next` key, as a control plane that rotated before this edge heard of it would.
                    let mut r = sharegate_shared::keys::KeyRing::new(86_400);
                    let next = ring.get(2).context("key 2")?;
                    r.insert(2, sharegate_shared::keys::KeyState::Active, next.secret.clone())?;
                    Minter::new(&r, policy)
                }
                _ => Minter::new(&ring, policy),
            }?;
            let ip = get("ip")
                .map(|s| -> Result<IpPrefix> {
                    let (a, l) = s.split_once('/').context("ip/len")?;
                    IpPrefix::new(a.parse()?, l.parse()?).context("prefix")
                })
                .transpose()?;
            let allow: Option<Vec<u8>> = get("allow_countries").map(|s| s.replace(',', "").into_bytes());
            let deny: Option<Vec<u8>> = get("deny_countries").map(|s| s.replace(',', "").into_bytes());
            let claims = Claims {
                token_id: token_id(name),
                iat,
                nbf,
                exp,
                permissions: perms(spec.get("perms")),
                asset: get("asset").map(Text::from),
                prefix: get("prefix").map(Text::from),
                share: get("share").map(Text::from),
                viewer: get("viewer").map(Text::from),
                session: get("session").map(Text::from),
                campaign: get("campaign").map(Text::from),
                channel: get("channel").map(Text::from),
                ip,
                countries: allow
                    .as_deref()
                    .map(Countries::Allow)
                    .or(deny.as_deref().map(Countries::Deny)),
                origin: get("origin").map(Text::from),
                watermark: get("watermark").map(str::as_bytes),
                ..Claims::default()
            };
            let t = minter.mint(&claims).map_err(|e| anyhow!("minting {name}: {e}"))?;
            tokens.insert(name.clone(), t);
        }
        Ok(Minted {
            tokens,
            watermark_key: SecretKey::from_hex(self.key("watermark")).map_err(|e| anyhow!("{e}"))?,
        })
    }

    /// The suite's revocation state as a signed snapshot, built at `now`.
    pub fn state(&self, now: u64, generation: u64) -> Result<Vec<u8>> {
        let key = StateKey::new(
            SecretKey::from_hex(self.key("state"))
                .map_err(|e| anyhow!("{e}"))?
                .expose()
                .to_owned(),
        );
        let now32 = u32::try_from(now)?;
        let specs = self.doc["tokens"].as_object().context("tokens")?;
        let issued: Vec<IssuedToken> = specs
            .iter()
            .map(|(name, s)| {
                let iat = (now as i64 + s.get("iat_offset").and_then(Value::as_i64).unwrap_or(0)) as u32;
                IssuedToken {
                    id: token_id(name),
                    iat,
                    exp: iat + 7 * 86_400,
                }
            })
            .collect();
        let revoked: Vec<RevokedToken> = self.doc["state"]["revoked_tokens"]
            .as_array()
            .context("revoked_tokens")?
            .iter()
            .filter_map(Value::as_str)
            .map(|n| {
                let it = issued.iter().find(|i| i.id == token_id(n)).copied();
                let it = it.unwrap_or(IssuedToken {
                    id: token_id(n),
                    iat: now32,
                    exp: now32 + 86_400,
                });
                RevokedToken {
                    id: it.id,
                    iat: it.iat,
                    exp: it.exp,
                }
            })
            .collect();
        let mut watermarks = Vec::new();
        for w in self.doc["state"]["watermarks"].as_array().context("watermarks")? {
            let kind = match w["kind"].as_str() {
                Some("share") => ScopeKind::Share,
                Some("viewer") => ScopeKind::Viewer,
                Some("session") => ScopeKind::Session,
                Some("asset") => ScopeKind::Asset,
                Some("campaign") => ScopeKind::Campaign,
                _ => bail!("unknown watermark kind"),
            };
            let through = (now as i64 + w["through_offset"].as_i64().unwrap_or(0)) as u32;
            watermarks.push(Watermark::new(kind, w["id"].as_str().unwrap_or("").as_bytes(), through));
        }
        let params = SnapshotParams {
            generation,
            built_at: now32,
            // Everything issued up to now (and a minute ahead, for tokens minted "in the future") is in the issued set.
            cutoff: now32 + 60,
            expire_before: now32 - 3600 * 3,
            max_token_lifetime: 7 * 86_400,
        };
        build_snapshot(&params, issued, &revoked, &watermarks, &key).map_err(|e| anyhow!("{e}"))
    }
}

impl Minted {
    /// Expand `{name}`, `{name!tamper}`, `{wm:ID:/path}` and `{wmfile:ID:path}` placeholders.
    pub fn expand(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let inner = &rest[start + 1..start + end];
            out.push_str(&self.placeholder(inner).unwrap_or_else(|| format!("{{{inner}}}")));
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn placeholder(&self, inner: &str) -> Option<String> {
        if let Some(name) = inner.strip_suffix("!tamper") {
            let t = self.tokens.get(name)?;
            let mut b = t.clone().into_bytes();
            let i = b.len() / 2;
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            return String::from_utf8(b).ok();
        }
        if let Some(rest) = inner.strip_prefix("wm:") {
            let (id, path) = rest.split_once(':')?;
            return sharegate_edge::watermark::variant_path(&self.watermark_key, id.as_bytes(), path);
        }
        if let Some(rest) = inner.strip_prefix("wmfile:") {
            let (id, path) = rest.split_once(':')?;
            let v = sharegate_edge::watermark::variant_path(&self.watermark_key, id.as_bytes(), &format!("/{path}"))?;
            return Some(v.trim_start_matches('/').to_string());
        }
        self.tokens.get(inner).cloned()
    }

    /// The request of a case (or of a follow-up step), expanded.
    pub fn request(&self, r: &Value) -> HttpRequest {
        let s = |k: &str| r.get(k).and_then(Value::as_str).map(|v| self.expand(v));
        HttpRequest {
            method: s("method").unwrap_or_else(|| "GET".into()),
            path: s("path").unwrap_or_default(),
            query: s("query"),
            headers: r
                .get("headers")
                .and_then(Value::as_object)
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.to_lowercase(), self.expand(v.as_str().unwrap_or(""))))
                        .collect()
                })
                .unwrap_or_default(),
            client_ip: s("client_ip"),
            country: s("country"),
        }
    }
}

/// Check a response to a request with `method` against an `expect` object. `Err` says what differs.
pub fn check(minted: &Minted, expect: &Value, method: &str, resp: &HttpResponse) -> Result<()> {
    let want = expect["status"].as_u64().unwrap_or(200) as u16;
    let body = String::from_utf8_lossy(&resp.body);
    if resp.status != want {
        bail!(
            "status {} (want {want}); body: {}",
            resp.status,
            body.chars().take(300).collect::<String>()
        );
    }
    if let Some(reason) = expect.get("reason").and_then(Value::as_str) {
        let needle = format!("\"error\":\"{reason}\"");
        // A HEAD denial has no body: its reason header says it. (A GET denial must carry its JSON body.)
        let by_header = method.eq_ignore_ascii_case("HEAD")
            && resp.body.is_empty()
            && resp.headers.get("x-sharegate-reason").map(String::as_str) == Some(reason);
        if !body.contains(&needle) && !by_header {
            bail!("body lacks reason {reason}: {body}");
        }
    }
    if let Some(h) = expect.get("headers").and_then(Value::as_object) {
        for (k, v) in h {
            let got = resp.headers.get(&k.to_lowercase());
            if got.map(String::as_str) != v.as_str() {
                bail!("header {k}: {got:?}, want {v}");
            }
        }
    }
    for k in expect
        .get("headers_absent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(k) = k.as_str()
            && resp.headers.contains_key(k)
        {
            bail!("header {k} present");
        }
    }
    for s in expect
        .get("body_contains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = minted.expand(s.as_str().unwrap_or(""));
        if !body.contains(&s) {
            bail!("body lacks {s:?}: {body}");
        }
    }
    for s in expect
        .get("body_not_contains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = minted.expand(s.as_str().unwrap_or(""));
        if body.contains(&s) {
            bail!("body contains {s:?}: {body}");
        }
    }
    if let Some(f) = expect.get("body_file").and_then(Value::as_str) {
        let path = conformance_dir().join("origin").join(minted.expand(f));
        let mut want = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
        // `body_range: [first, last]`: the bytes a byte range asks for (both inclusive, as Content-Range counts).
        if let Some(r) = expect.get("body_range").and_then(Value::as_array) {
            let at = |i: usize| r.get(i).and_then(Value::as_u64).and_then(|v| usize::try_from(v).ok());
            let (first, last) = at(0).zip(at(1)).context("body_range is [first, last]")?;
            want = want.get(first..=last).context("body_range outside body_file")?.to_vec();
        }
        if resp.body != want {
            bail!("body differs from {}: {body}", path.display());
        }
    }
    if expect.get("body_empty").and_then(Value::as_bool) == Some(true) && !resp.body.is_empty() {
        bail!("body not empty");
    }
    Ok(())
}

/// A follow-up request built from a response line: the first line containing `follow.line`, resolved as a URI
/// (absolute path, or relative to the request path), optionally with its tail replaced by `rewrite_file`.
pub fn follow_request(prev: &HttpRequest, body: &str, follow: &Value) -> Result<HttpRequest> {
    let needle = follow["line"].as_str().context("follow.line")?;
    let line = body
        .lines()
        .find(|l| l.contains(needle))
        .with_context(|| format!("no line with {needle:?} in {body}"))?;
    // A URI attribute or a URI line.
    let uri = match line.find("URI=\"") {
        Some(i) => line[i + 5..].split('"').next().unwrap_or(""),
        None => line.trim(),
    };
    let (mut path, query) = match uri.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (uri.to_string(), None),
    };
    if !path.starts_with('/') {
        let dir = prev.path.rsplit_once('/').map_or("", |(d, _)| d);
        path = format!("{dir}/{path}");
    }
    if let Some(f) = follow.get("rewrite_file").and_then(Value::as_str) {
        let cut = path.rfind(needle).context("rewrite_file")?;
        path = format!("{}{f}", &path[..cut]);
    }
    Ok(HttpRequest {
        method: "GET".into(),
        path,
        query,
        headers: Vec::new(),
        client_ip: follow
            .get("client_ip")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(prev.client_ip.clone()),
        country: prev.country.clone(),
    })
}

/// Send one request over a fresh TCP connection with the request line written verbatim (no client-side URL
/// normalisation: attackers send `..` and `%2e%2e` as they like), and read the whole response.
pub async fn raw_http(addr: &str, host: &str, r: &HttpRequest, extra: &[(String, String)]) -> Result<HttpResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = match &r.query {
        Some(q) => format!("{}?{q}", r.path),
        None => r.path.clone(),
    };
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n",
        r.method
    );
    for (k, v) in r.headers.iter().chain(extra) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = Vec::new();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(head.as_bytes()).await?;
        stream.read_to_end(&mut raw).await
    };
    // A runtime that never answers is a failure to report, not a hung test.
    tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
        .await
        .context("no complete response within 30 s")??;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .context("status line")?
        .parse()?;
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").context("chunk size")?;
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16)?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size).context("short chunk")?);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        body = out;
    }
    Ok(HttpResponse { status, headers, body })
}

/// The path of a command-line tool the test needs. Tests never skip silently: a missing tool is a failure that
/// says how to get it (`bash scripts/test.sh` installs everything).
pub fn require_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!("`{name}` is not installed: run `bash scripts/test.sh`, which installs what the tests need"),
    }
}

/// Make a two-rendition, 6-second HLS VOD (2 s segments, 640x360 and 320x180, AAC audio) under `dir/<asset>/`.
pub fn make_hls_vod(dir: &std::path::Path, asset: &str) -> Result<PathBuf> {
    let out = dir.join(asset);
    std::fs::create_dir_all(&out)?;
    let ffmpeg = require_tool("ffmpeg");
    let status = std::process::Command::new(ffmpeg)
        .current_dir(&out)
        .args(["-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc=duration=6:size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=6"])
        .args(["-filter_complex", "[0:v]split=2[v0][v1];[v1]scale=320:180[v1o]"])
        .args(["-map", "[v0]", "-map", "[v1o]", "-map", "1:a", "-map", "1:a"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-sc_threshold",
            "0",
        ])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod"])
        .args([
            "-hls_segment_filename",
            "v%v/seg_%03d.ts",
            "-master_pl_name",
            "master.m3u8",
        ])
        .args(["-var_stream_map", "v:0,a:0 v:1,a:1", "v%v/index.m3u8"])
        .status()?;
    if !status.success() {
        bail!("ffmpeg failed to make the test VOD: {status}");
    }
    Ok(out)
}

/// Read a whole HLS stream through `url` with ffmpeg as the client (every variant's every segment). Returns
/// whether it succeeded, and ffmpeg's error output.
pub fn ffmpeg_reads(url: &str) -> (bool, String) {
    let ffmpeg = require_tool("ffmpeg");
    let out = std::process::Command::new(ffmpeg)
        .args([
            "-v", "error", "-nostdin", "-i", url, "-map", "0", "-c", "copy", "-f", "null", "-",
        ])
        .output();
    match out {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string()),
        Err(e) => (false, e.to_string()),
    }
}

/// The duration ffprobe reads for a stream, in seconds.
pub fn ffprobe_duration(url: &str) -> Option<f64> {
    let ffprobe = require_tool("ffprobe");
    let out = std::process::Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=nw=1:nk=1",
            url,
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The answer the engine plans for a decision, played out in memory against the suite's origin directory: what
/// every adapter must send (status, the engine's headers, the body it plans), with no runtime in between. A missing
/// file is the origin's 404. The runtime's own `Content-Length` of a GET body is added as a runtime adds it.
pub fn engine_answer(
    engine: &sharegate_edge::Engine,
    decision: sharegate_edge::Decision<'_>,
    r: &HttpRequest,
    now: u64,
) -> HttpResponse {
    use sharegate_edge::response::{self, BodyPlan, ClientAsk, OriginAnswer, Step, TagHeader};
    let head = r.method == "HEAD";
    let range = r.headers.iter().find(|(k, _)| k == "range").map(|(_, v)| v.as_str());
    let ask = ClientAsk { head, range };
    let (plan, file) = match response::plan(decision, ask).0 {
        Step::Answer(plan) => (plan, Vec::new()),
        Step::Fetch(a) => {
            let file = sharegate_edge::hls::origin_file_path(&a.origin_path)
                .and_then(|rel| std::fs::read(conformance_dir().join("origin").join(rel)).ok());
            let origin = OriginAnswer {
                status: if file.is_some() { 200 } else { 404 },
                length: Some(file.as_ref().map_or(0, |f| f.len() as u64)),
                sliceable: true,
                ..OriginAnswer::default()
            };
            let file = file.unwrap_or_default();
            let mut plan = a.respond(ask, &origin, TagHeader::SurrogateKey);
            if plan.needs_body() {
                plan.finish(engine, file.clone(), now);
            }
            (plan, file)
        }
    };
    let body = match plan.body {
        BodyPlan::Whole => file,
        BodyPlan::Slice { start, end } => file
            .get(usize::try_from(start).unwrap_or(usize::MAX)..=usize::try_from(end).unwrap_or(0))
            .unwrap_or_default()
            .to_vec(),
        BodyPlan::Bytes(b) => b,
        BodyPlan::Empty | BodyPlan::Rewrite(_) | BodyPlan::Buffer(_) => Vec::new(),
    };
    let (status, mut headers) = (
        plan.status,
        plan.headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<String, String>>(),
    );
    if !head && status != 204 {
        headers
            .entry("content-length".into())
            .or_insert_with(|| body.len().to_string());
    }
    HttpResponse { status, headers, body }
}

/// A native edge running in this process on an ephemeral loopback port.
pub struct RunningEdge {
    /// `127.0.0.1:port`.
    pub addr: String,
    /// The edge, for direct state offers and event inspection.
    pub edge: std::sync::Arc<sharegate_edge_native::Edge>,
}

/// Start a native edge with these engine settings and options (origins etc.).
pub async fn start_native_edge(
    settings: &BTreeMap<String, String>,
    opts: sharegate_edge_native::NativeOptions,
) -> Result<RunningEdge> {
    let config = sharegate_edge::EdgeConfig::from_source(settings).map_err(|e| anyhow!("{e}"))?;
    let edge = sharegate_edge_native::Edge::new(config, opts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(sharegate_edge_native::serve(std::sync::Arc::clone(&edge), listener));
    Ok(RunningEdge { addr, edge })
}

/// The value after `--name` on this process's command line (the examples' flags).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Run one conformance case (and its follow-up steps) over real HTTP against an edge at `addr` (`host:port`). The
/// simulated client address and country travel as `X-Forwarded-For` / `X-Sharegate-Country`, which the edge under
/// test trusts (`SHAREGATE_TRUST_FORWARDED`, local runtimes only). With `normalized`, a case's `expect_normalized`
/// replaces `expect` (runtimes that resolve dot segments before the adapter sees the URL). With `origin`, a case's
/// `origin_path` must be what the origin received.
pub async fn run_case_http(
    addr: &str,
    minted: &Minted,
    req: HttpRequest,
    case_expect: &Value,
    normalized: Option<&Value>,
    origin: Option<&origin::StaticOrigin>,
) -> Result<()> {
    let expect = normalized.unwrap_or(case_expect);
    let mut extra = Vec::new();
    if let Some(ip) = &req.client_ip {
        extra.push(("x-forwarded-for".to_string(), ip.clone()));
    }
    if let Some(c) = &req.country {
        extra.push((sharegate_edge::contract::headers::TEST_COUNTRY.to_string(), c.clone()));
    }
    if let Some(o) = origin {
        o.clear();
    }
    let resp = raw_http(addr, addr, &req, &extra).await?;
    check(minted, expect, &req.method, &resp)?;
    if let Some(o) = origin
        && let Some(leak) = o.requests().iter().find(|t| {
            t.starts_with("/t/") || t.contains("sg=") || minted.tokens.values().any(|tok| t.contains(tok.as_str()))
        })
    {
        bail!("a token reached the origin: {leak}");
    }
    if let (Some(o), Some(want)) = (origin, expect.get("origin_path").and_then(Value::as_str)) {
        let want = minted.expand(want);
        let seen = o.requests();
        let paths: Vec<&str> = seen.iter().map(|t| t.split('?').next().unwrap_or("")).collect();
        if paths != [want.as_str()] {
            bail!("origin received {seen:?}, want exactly [{want:?}]");
        }
    }
    if let Some(follow) = expect.get("follow") {
        let body = String::from_utf8_lossy(&resp.body).to_string();
        let next = follow_request(&req, &body, follow)?;
        Box::pin(run_case_http(addr, minted, next, &follow["expect"], None, origin))
            .await
            .context("follow")?;
    }
    Ok(())
}

/// A signed snapshot for benchmarks: `issued` synthetic tokens (ids `i.to_le_bytes() ++ 0xbe ++ 0…`, issued 100 s
/// ago, valid a day), `revoked` of them revoked, evenly spread (100k of 1M is the revocation benchmark's shape).
pub fn synthetic_state(now: u32, issued: u32, revoked: usize, key: [u8; 32]) -> Vec<u8> {
    let issued: Vec<IssuedToken> = (0..issued)
        .map(|i| {
            let mut id = [0u8; 12];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id[4] = 0xbe;
            IssuedToken {
                id,
                iat: now - 100,
                exp: now + 86_000,
            }
        })
        .collect();
    let step = (issued.len() / revoked.max(1)).max(1);
    let revoked: Vec<RevokedToken> = issued
        .iter()
        .step_by(step)
        .take(revoked)
        .map(|t| RevokedToken {
            id: t.id,
            iat: t.iat,
            exp: t.exp,
        })
        .collect();
    let params = SnapshotParams {
        generation: 1,
        built_at: now,
        cutoff: now + 60,
        expire_before: now - 3600,
        max_token_lifetime: 86_400,
    };
    build_snapshot(&params, issued, &revoked, &[], &StateKey::new(key)).expect("a valid synthetic snapshot")
}

/// The key of a runtime configuration (its settings as JSON), for one runtime per distinct configuration.
pub fn config_key(settings: &BTreeMap<String, String>) -> String {
    serde_json::to_string(settings).unwrap_or_default()
}

/// Start one runtime per distinct configuration of the suite's cases (`config_of`), all at once, keyed by
/// [`config_key`]. A runtime that fails to start fails the whole start, with its error.
pub async fn start_per_config<T, Fut>(
    suite: &Suite,
    config_of: impl Fn(&Value) -> BTreeMap<String, String>,
    start: impl Fn(BTreeMap<String, String>) -> Fut,
) -> Result<BTreeMap<String, T>>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let mut configs = BTreeMap::new();
    for case in suite.cases() {
        let settings = config_of(case);
        configs.insert(config_key(&settings), settings);
    }
    let starting: Vec<_> = configs
        .into_iter()
        .map(|(key, settings)| (key, tokio::spawn(start(settings))))
        .collect();
    let mut started = BTreeMap::new();
    for (key, handle) in starting {
        started.insert(key, handle.await.context("a runtime's start task")??);
    }
    Ok(started)
}

/// Run every case of the suite over HTTP against the runtime `addr_of` names for it; the failures, one line each.
/// `normalized`: use a case's `expect_normalized` where it has one (see [`run_case_http`]).
pub async fn run_suite_http<'a>(
    suite: &Suite,
    minted: &Minted,
    addr_of: impl Fn(&Value) -> &'a str,
    normalized: bool,
    origin: Option<&origin::StaticOrigin>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for case in suite.cases() {
        let name = case["name"].as_str().unwrap_or("?");
        let req = minted.request(&case["request"]);
        let norm = if normalized {
            case.get("expect_normalized")
        } else {
            None
        };
        if let Err(e) = run_case_http(addr_of(case), minted, req, &case["expect"], norm, origin).await {
            failures.push(format!("{name}: {e:#}"));
        }
    }
    failures
}
