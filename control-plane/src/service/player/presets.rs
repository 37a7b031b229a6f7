//! Branding presets: how a share's player looks and starts, managed by admins and chosen per share.
//!
//! - `PUT /v1/presets/{name}` (admin) creates or replaces one; `DELETE /v1/presets/{name}` (admin) removes it
//!   (shares that name it fall back to the built-in `default` look); both audited.
//! - `GET /v1/presets` and `GET /v1/presets/{name}` (admin, minter, auditor) read them.
//!
//! A preset names which of its settings a viewer's URL may override (`overridable`): `?autoplay=1&muted=1&loop=1
//! &t=30&controls=0&title=0` change only those, and are ignored otherwise, so a product decides whether a link in
//! the wild can, say, strip the controls. Stored in the settings namespace under `preset:<name>`.

use super::super::auth::{ManagePresets, ReadPresets};
use super::super::error::ApiError;
use super::super::extract::{Authorized, JsonBody};
use super::super::{AppState, audit, now};
use crate::store::Ns;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The preset a share without one uses (an admin may store its own `default`).
pub const DEFAULT: &str = "default";

/// Most presets kept (each is read per page; the list is read whole).
pub const MAX_PRESETS: usize = 200;

/// A setting a viewer's URL may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overridable {
    /// `?autoplay=1|0` (autoplay always starts muted).
    Autoplay,
    /// `?muted=1|0`.
    Muted,
    /// `?loop=1|0`.
    Loop,
    /// `?t=<seconds>`.
    StartTime,
    /// `?controls=1|0`.
    Controls,
    /// `?title=1|0`.
    ShowTitle,
}

/// How a player looks and starts: the body of `PUT /v1/presets/{name}`, and the `player` object pages and the
/// playback JSON carry (resolved: preset, then the URL overrides it allows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayerLook {
    /// Accent colour, `#rrggbb`.
    #[serde(default = "accent")]
    pub accent_color: String,
    /// Background colour, `#rrggbb`.
    #[serde(default = "background")]
    pub background_color: String,
    /// Text colour, `#rrggbb`.
    #[serde(default = "text")]
    pub text_color: String,
    /// A logo shown beside the title (http(s) URL).
    #[serde(default)]
    pub logo_url: Option<String>,
    /// Show the title above the player (share page).
    #[serde(default = "yes")]
    pub show_title: bool,
    /// Show the player controls.
    #[serde(default = "yes")]
    pub controls: bool,
    /// Start playing at once (the player mutes to do so, as browsers require; never when the viewer asks for
    /// reduced motion).
    #[serde(default)]
    pub autoplay: bool,
    /// Start muted.
    #[serde(default)]
    pub muted: bool,
    /// Start again at the end.
    #[serde(default, rename = "loop")]
    pub loop_: bool,
    /// Where playback starts, seconds.
    #[serde(default)]
    pub start_time: u32,
    /// The poster image (http(s) URL); none: the video's first frame.
    #[serde(default)]
    pub poster_url: Option<String>,
}

fn accent() -> String {
    "#3b82f6".into()
}
fn background() -> String {
    "#0b0d12".into()
}
fn text() -> String {
    "#f5f7fa".into()
}
fn yes() -> bool {
    true
}

impl Default for PlayerLook {
    fn default() -> Self {
        PlayerLook {
            accent_color: accent(),
            background_color: background(),
            text_color: text(),
            logo_url: None,
            show_title: true,
            controls: true,
            autoplay: false,
            muted: false,
            loop_: false,
            start_time: 0,
            poster_url: None,
        }
    }
}

/// `PUT /v1/presets/{name}` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetRequest {
    /// The look.
    #[serde(flatten)]
    pub look: PlayerLook,
    /// What a viewer's URL may override.
    #[serde(default)]
    pub overridable: Vec<Overridable>,
}

/// A stored preset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Preset {
    /// Its name.
    pub name: String,
    /// The look.
    #[serde(flatten)]
    pub look: PlayerLook,
    /// What a viewer's URL may override.
    pub overridable: Vec<Overridable>,
    /// Last written, unix seconds.
    pub updated_at: u64,
    /// API key id of the last writer (absent for the built-in default).
    pub updated_by: Option<String>,
}

impl Preset {
    /// The built-in default: our look, and the viewer may choose autoplay, mute, loop and the start time.
    pub fn builtin() -> Preset {
        Preset {
            name: DEFAULT.into(),
            look: PlayerLook::default(),
            overridable: vec![
                Overridable::Autoplay,
                Overridable::Muted,
                Overridable::Loop,
                Overridable::StartTime,
            ],
            updated_at: 0,
            updated_by: None,
        }
    }

    /// The look after the URL's overrides (`query` pairs) that this preset allows; others and bad values are
    /// ignored (a viewer's page never fails on a hand-edited URL).
    pub fn resolve(&self, query: &[(String, String)]) -> PlayerLook {
        let mut look = self.look.clone();
        let allowed = |o| self.overridable.contains(&o);
        for (k, v) in query {
            let flag = match v.as_str() {
                "1" | "true" => Some(true),
                "0" | "false" => Some(false),
                _ => None,
            };
            match (k.as_str(), flag) {
                ("autoplay", Some(f)) if allowed(Overridable::Autoplay) => look.autoplay = f,
                ("muted", Some(f)) if allowed(Overridable::Muted) => look.muted = f,
                ("loop", Some(f)) if allowed(Overridable::Loop) => look.loop_ = f,
                ("controls", Some(f)) if allowed(Overridable::Controls) => look.controls = f,
                ("title", Some(f)) if allowed(Overridable::ShowTitle) => look.show_title = f,
                ("t", _) if allowed(Overridable::StartTime) => {
                    if let Ok(t) = v.trim_end_matches('s').parse::<u32>() {
                        look.start_time = t;
                    }
                }
                _ => {}
            }
        }
        // `muted` stays what the preset and URL say: the player mutes when it autoplays (browsers refuse sound
        // without a gesture), and a viewer who asked for reduced motion, whom it never autoplays, keeps the sound.
        look
    }
}

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/presets", get(list))
        .route("/v1/presets/{name}", get(read).put(put).delete(remove))
}

fn store_key(name: &str) -> String {
    format!("preset:{name}")
}

/// Preset names: 1–64 of `a-z 0-9 - _`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check_colour(field: &str, v: &str) -> Result<(), ApiError> {
    let ok = v.len() == 7 && v.starts_with('#') && v[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!("{field} must be a colour like #1a2b3c")))
    }
}

fn check_url(field: &str, v: &str) -> Result<(), ApiError> {
    let ok = v.len() <= 2048
        && (v.starts_with("https://") || v.starts_with("http://"))
        && v.bytes()
            // Nothing that could end an HTML attribute (the page's CSP takes only the parsed origin of these URLs).
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'<' | b'>' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "{field} must be an http(s) URL of at most 2048 visible characters"
        )))
    }
}

fn check(look: &PlayerLook) -> Result<(), ApiError> {
    check_colour("accent_color", &look.accent_color)?;
    check_colour("background_color", &look.background_color)?;
    check_colour("text_color", &look.text_color)?;
    if let Some(u) = &look.logo_url {
        check_url("logo_url", u)?;
    }
    if let Some(u) = &look.poster_url {
        check_url("poster_url", u)?;
    }
    if look.start_time > 7 * 86_400 {
        return Err(ApiError::Invalid("start_time is at most a week (604800 s)".into()));
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<Preset, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Internal(format!("preset record: {e}")))
}

/// The preset named `name` (through the hot cache: read on every page), the built-in one for `default` unless an
/// admin stored their own, `None` if unknown.
pub async fn get_preset(s: &AppState, name: &str) -> Result<Option<Preset>, ApiError> {
    if !valid_name(name) {
        return Ok(None);
    }
    match s.get_hot(Ns::Settings, &store_key(name)).await? {
        Some(b) => decode(&b).map(Some),
        None if name == DEFAULT => Ok(Some(Preset::builtin())),
        None => Ok(None),
    }
}

/// A share may only name a preset that exists.
pub async fn ensure_exists(s: &AppState, name: &str) -> Result<(), ApiError> {
    if get_preset(s, name).await?.is_some() {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "preset `{name}` does not exist (PUT /v1/presets/{name} first)"
        )))
    }
}

/// The preset a share's player uses: its own if it still exists, else the default.
pub async fn for_share(s: &AppState, name: Option<&str>) -> Result<Preset, ApiError> {
    if let Some(n) = name
        && let Some(p) = get_preset(s, n).await?
    {
        return Ok(p);
    }
    Ok(get_preset(s, DEFAULT).await?.unwrap_or_else(Preset::builtin))
}

async fn list(State(s): State<Arc<AppState>>, _: Authorized<ReadPresets>) -> Result<Json<Vec<Preset>>, ApiError> {
    let mut out = s
        .store
        .scan(Ns::Settings, "preset:")
        .await?
        .iter()
        .map(|(_, b)| decode(b))
        .collect::<Result<Vec<_>, _>>()?;
    if !out.iter().any(|p| p.name == DEFAULT) {
        out.push(Preset::builtin());
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(out))
}

async fn read(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    _: Authorized<ReadPresets>,
) -> Result<Json<Preset>, ApiError> {
    // Straight from the store, not the hot cache: an admin reads back what they just wrote.
    if !valid_name(&name) {
        return Err(ApiError::NotFound("preset"));
    }
    match s.store.get(Ns::Settings, &store_key(&name)).await? {
        Some(b) => Ok(Json(decode(&b)?)),
        None if name == DEFAULT => Ok(Json(Preset::builtin())),
        None => Err(ApiError::NotFound("preset")),
    }
}

async fn put(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    c: Authorized<ManagePresets>,
    JsonBody(req): JsonBody<PresetRequest>,
) -> Result<(StatusCode, Json<Preset>), ApiError> {
    if !valid_name(&name) {
        return Err(ApiError::Invalid(
            "a preset name is 1 to 64 of a-z, 0-9, '-' and '_'".into(),
        ));
    }
    check(&req.look)?;
    let key = store_key(&name);
    let existed = s.store.get(Ns::Settings, &key).await?.is_some();
    if !existed && s.store.scan(Ns::Settings, "preset:").await?.len() >= MAX_PRESETS {
        return Err(ApiError::Invalid(format!("at most {MAX_PRESETS} presets")));
    }
    let mut overridable = req.overridable;
    overridable.sort_by_key(|o| *o as u8);
    overridable.dedup();
    let preset = Preset {
        name,
        look: req.look,
        overridable,
        updated_at: now(),
        updated_by: Some(c.key_id.clone()),
    };
    let bytes = serde_json::to_vec(&preset).map_err(|e| ApiError::Internal(e.to_string()))?;
    s.store.put(Ns::Settings, &key, &bytes).await?;
    // This replica shows the change at once (others within the hot cache's second), and forgets a cached "no
    // such preset" that would refuse a share naming it.
    s.invalidate_hot(Ns::Settings, &key);
    audit(&s, &c, "presets.put", &preset.name, "ok").await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(preset)))
}

async fn remove(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    c: Authorized<ManagePresets>,
) -> Result<StatusCode, ApiError> {
    if !valid_name(&name) || !s.store.delete(Ns::Settings, &store_key(&name)).await? {
        return Err(ApiError::NotFound("preset"));
    }
    s.invalidate_hot(Ns::Settings, &store_key(&name));
    audit(&s, &c, "presets.delete", &name, "ok").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn urls_override_only_what_the_preset_allows() {
        let mut p = Preset::builtin();
        let look = p.resolve(&q(&[("autoplay", "1"), ("controls", "0"), ("t", "30")]));
        assert!(
            look.autoplay && !look.muted,
            "autoplay is allowed; muting is the player's act when it autoplays"
        );
        assert!(look.controls, "controls are not overridable in the default preset");
        assert_eq!(look.start_time, 30);
        p.overridable = vec![Overridable::Controls];
        let look = p.resolve(&q(&[("autoplay", "1"), ("controls", "0"), ("t", "x")]));
        assert!(!look.autoplay && !look.controls && look.start_time == 0);
        // Bad values are ignored, not errors.
        let look = p.resolve(&q(&[("controls", "maybe")]));
        assert!(look.controls);
    }

    #[test]
    fn colours_names_and_urls_are_checked() {
        assert!(valid_name("brand-a_2") && !valid_name("Brand") && !valid_name("") && !valid_name("a/b"));
        let mut look = PlayerLook::default();
        assert!(check(&look).is_ok());
        look.accent_color = "red".into();
        assert!(check(&look).is_err());
        look = PlayerLook {
            poster_url: Some("javascript:alert(1)".into()),
            ..PlayerLook::default()
        };
        assert!(check(&look).is_err());
        look.poster_url = Some("https://cdn.example/p.jpg\"><script>".into());
        assert!(check(&look).is_err());
        for bad in ["https://img.example/'x", "https://img.example/a b"] {
            look.poster_url = Some(bad.into());
            assert!(check(&look).is_err(), "{bad}");
        }
    }
}
