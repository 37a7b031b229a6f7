//! What the readiness check reads of a playlist: whether it is a multivariant or a media playlist, the URIs it
//! names and the two tags the profile holds it to (EXT-X-TARGETDURATION, EXT-X-ENDLIST).
//!
//! Attribute URIs (`EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`, `EXT-X-MAP`) are read by the edge's own reader,
//! [`hls::rewrite_uris`], so the check finds exactly the URIs the edge tokenises, quoting rules included: a quoted
//! comma or `URI=` inside another attribute's value is not a URI, an unquoted `URI=` is not one either, and a
//! tag whose quote is never closed makes the playlist unreadable (the edge refuses to rewrite it too). Tag names
//! and URI lines need no quoting rules and are read here, line by line, because the edge's reader does not say
//! which tag a URI came from (an I-frame playlist and a variant are both [`hls::UriKind::Variant`] to it) and
//! counts `EXT-X-PART` URIs as segments, which the check does not follow.

use sharegate_edge::hls::{self, PlaylistError};

/// What the multivariant playlist names, with the tag that named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RenditionKind {
    /// EXT-X-STREAM-INF: the variants a player switches between.
    Variant,
    /// EXT-X-MEDIA: alternative audio, subtitles, ...
    Media,
    /// EXT-X-I-FRAME-STREAM-INF.
    IFrame,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MultivariantPlaylist {
    pub renditions: Vec<(RenditionKind, String)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MediaPlaylist {
    /// The EXT-X-TARGETDURATION value as written; `None` when the tag is absent.
    pub target_duration: Option<String>,
    pub segments: Vec<String>,
    pub maps: Vec<String>,
    pub endlist: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Playlist {
    Multivariant(MultivariantPlaylist),
    Media(MediaPlaylist),
    /// No `#EXTM3U` header, or a mix of multivariant and media tags.
    Neither,
    /// The edge's reader cannot find its URIs (an unterminated quote).
    Unreadable(PlaylistError),
}

/// Read an M3U8 playlist: just what the check needs; other tags are skipped.
pub(super) fn read(text: &str) -> Playlist {
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Playlist::Neither;
    }
    let (mut mv, mut media) = (MultivariantPlaylist::default(), MediaPlaylist::default());
    let (mut mv_tags, mut media_tags) = (false, false);
    let mut next_is_variant = false;
    for line in lines {
        if let Some(tag) = line.strip_prefix('#') {
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            let uri = || match tag_uri(line) {
                Ok(uri) => Ok(uri),
                Err(e) => Err(Playlist::Unreadable(e)),
            };
            match name {
                "EXT-X-STREAM-INF" => {
                    mv_tags = true;
                    next_is_variant = true;
                }
                "EXT-X-MEDIA" | "EXT-X-I-FRAME-STREAM-INF" => {
                    mv_tags = true;
                    let kind = if name == "EXT-X-MEDIA" {
                        RenditionKind::Media
                    } else {
                        RenditionKind::IFrame
                    };
                    // EXT-X-MEDIA without a URI is carried inside the variants' own segments.
                    match uri() {
                        Ok(Some(uri)) => mv.renditions.push((kind, uri)),
                        Ok(None) => {}
                        Err(unreadable) => return unreadable,
                    }
                }
                "EXT-X-TARGETDURATION" => {
                    media_tags = true;
                    media.target_duration = Some(value.trim().to_string());
                }
                "EXTINF" => media_tags = true,
                "EXT-X-ENDLIST" => {
                    media_tags = true;
                    media.endlist = true;
                }
                "EXT-X-MAP" => {
                    media_tags = true;
                    match uri() {
                        Ok(Some(uri)) => media.maps.push(uri),
                        Ok(None) => {}
                        Err(unreadable) => return unreadable,
                    }
                }
                _ => {}
            }
        } else if next_is_variant {
            mv.renditions.push((RenditionKind::Variant, line.to_string()));
            next_is_variant = false;
        } else {
            media_tags = true;
            media.segments.push(line.to_string());
        }
    }
    match (mv_tags, media_tags) {
        (true, false) => Playlist::Multivariant(mv),
        (false, true) => Playlist::Media(media),
        _ => Playlist::Neither,
    }
}

/// The URI attribute of one tag line, as the edge reads it.
fn tag_uri(line: &str) -> Result<Option<String>, PlaylistError> {
    let mut found = None;
    // A one-tag playlist: the reader wants the header, and a line is never near its size limit.
    hls::rewrite_uris(&format!("#EXTM3U\n{line}\n"), |uri, _| {
        found.get_or_insert_with(|| uri.to_string());
        None
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multivariant_and_media_playlists() {
        let mv = "#EXTM3U\r\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en, main\",URI=\"audio/en.m3u8\"\r\n\
                  #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401f,mp4a.40.2\"\r\nv0/index.m3u8\r\n\
                  #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=9000,URI=\"v0/iframes.m3u8\"\r\n";
        assert_eq!(
            read(mv),
            Playlist::Multivariant(MultivariantPlaylist {
                renditions: vec![
                    (RenditionKind::Media, "audio/en.m3u8".into()),
                    (RenditionKind::Variant, "v0/index.m3u8".into()),
                    (RenditionKind::IFrame, "v0/iframes.m3u8".into()),
                ]
            })
        );
        let media = "\u{feff}#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:6.0,\n\
                     s0.m4s\n#EXTINF:6.0,\ns1.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            read(media),
            Playlist::Media(MediaPlaylist {
                target_duration: Some("6".into()),
                segments: vec!["s0.m4s".into(), "s1.m4s".into()],
                maps: vec!["init.mp4".into()],
                endlist: true,
            })
        );
        assert_eq!(read("hello"), Playlist::Neither);
        assert_eq!(read(""), Playlist::Neither);
    }

    fn media_uris(tag: &str) -> Vec<String> {
        match read(&format!("#EXTM3U\n{tag}\n")) {
            Playlist::Multivariant(mv) => mv.renditions.into_iter().map(|(_, u)| u).collect(),
            other => panic!("{tag}: {other:?}"),
        }
    }

    // The assertions of the control plane's former attribute parser, now held to the edge's reader.
    #[test]
    fn attributes_respect_quotes() {
        assert_eq!(media_uris(r#"#EXT-X-MEDIA:A=1,URI="x,y.m3u8",B=2"#), ["x,y.m3u8"]);
        assert!(media_uris(r#"#EXT-X-MEDIA:A="u,URI=no",B=2"#).is_empty());
        assert!(media_uris("#EXT-X-MEDIA:A=1, URI").is_empty());
        // The edge takes only quoted URIs (RFC 8216 §4.2: a URI attribute is a quoted-string).
        assert!(media_uris("#EXT-X-MEDIA:A=1, URI=x.m3u8").is_empty());
        // A quote never closed: where the URI ends is unknowable, for the edge as for the check.
        assert_eq!(
            read("#EXTM3U\n#EXT-X-MEDIA:URI=\"x.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n"),
            Playlist::Unreadable(PlaylistError::UnterminatedQuote)
        );
    }
}
