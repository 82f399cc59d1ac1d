//! Incremental detokenization with stop strings: turns a request's growing list of output tokens into
//! text deltas that never split a UTF-8 character and never show text a stop string will cut off.

use ember_models::tokenizer::Tokenizer;

/// Tokens decoded before the newest ones, so byte-level merges across token boundaries come out right.
const CONTEXT_TOKENS: usize = 6;

/// Why the detokenizer ended a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopMatch {
    /// The stop string that matched.
    pub stop: String,
}

/// Per-request incremental detokenizer.
#[derive(Debug, Clone)]
pub struct IncrementalDetokenizer {
    stops: Vec<String>,
    include_stop: bool,
    skip_special_tokens: bool,
    /// Output text so far (after stop-string truncation).
    text: String,
    /// How much of `text` has been handed out as deltas.
    emitted: usize,
    /// Start of the token window decoded for context, and where the new tokens begin.
    prefix_offset: usize,
    read_offset: usize,
    stopped: bool,
}

impl IncrementalDetokenizer {
    pub fn new(stops: Vec<String>, include_stop: bool, skip_special_tokens: bool) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            include_stop,
            skip_special_tokens,
            text: String::new(),
            emitted: 0,
            prefix_offset: 0,
            read_offset: 0,
            stopped: false,
        }
    }

    /// The full output text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Feeds the request's whole output token list after new tokens were appended; returns whether a stop
    /// string ended the request. Call [`Self::take_delta`] afterwards for the text to stream.
    pub fn update(&mut self, tokenizer: &Tokenizer, output_ids: &[u32]) -> Option<StopMatch> {
        if self.stopped || output_ids.len() <= self.read_offset {
            return None;
        }
        let old_len = self.text.len();
        let prefix = tokenizer
            .decode(
                &output_ids[self.prefix_offset..self.read_offset],
                self.skip_special_tokens,
            )
            .unwrap_or_default();
        let full = tokenizer
            .decode(&output_ids[self.prefix_offset..], self.skip_special_tokens)
            .unwrap_or_default();
        // Wait for more tokens while the newest bytes do not yet form a whole character.
        if full.ends_with('\u{FFFD}')
            || full.len() < prefix.len()
            || !full.is_char_boundary(prefix.len())
        {
            return None;
        }
        self.text.push_str(&full[prefix.len()..]);
        self.read_offset = output_ids.len();
        self.prefix_offset = self.read_offset.saturating_sub(CONTEXT_TOKENS);
        self.check_stops(old_len)
    }

    fn check_stops(&mut self, old_len: usize) -> Option<StopMatch> {
        let longest = self.stops.iter().map(|s| s.len()).max()?;
        // A stop string could start up to `longest - 1` bytes before the new text.
        let mut from = old_len.saturating_sub(longest - 1);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let found = self
            .stops
            .iter()
            .filter_map(|stop| {
                self.text[from..]
                    .find(stop.as_str())
                    .map(|at| (from + at, stop))
            })
            .min_by_key(|(at, stop)| (*at, std::cmp::Reverse(stop.len())));
        let (at, stop) = found?;
        let stop = stop.clone();
        let end = if self.include_stop {
            at + stop.len()
        } else {
            at
        };
        self.text.truncate(end);
        self.emitted = self.emitted.min(end);
        self.stopped = true;
        Some(StopMatch { stop })
    }

    /// Text not handed out yet. While running, the tail that could still be the start of a stop string is
    /// held back; `finished` releases everything.
    pub fn take_delta(&mut self, finished: bool) -> String {
        let mut end = self.text.len();
        if !finished && !self.stopped && !self.include_stop {
            let hold = self.stops.iter().map(|s| s.len()).max().unwrap_or(1) - 1;
            end = end.saturating_sub(hold).max(self.emitted);
            while !self.text.is_char_boundary(end) {
                end -= 1;
            }
        }
        if end <= self.emitted {
            return String::new();
        }
        let delta = self.text[self.emitted..end].to_string();
        self.emitted = end;
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_models::config::Architecture;
    use ember_models::testing::{write_tiny_model, TinyFormat};

    fn tokenizer() -> (tempfile::TempDir, Tokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_tiny_model(dir.path(), Architecture::Llama, TinyFormat::HfDir, 0).unwrap();
        let tok = Tokenizer::from_hf_dir(&path).unwrap();
        (dir, tok)
    }

    /// Feeds tokens one at a time; returns the concatenated deltas and the stop, if any.
    fn stream(
        tok: &Tokenizer,
        text: &str,
        stops: &[&str],
        include: bool,
    ) -> (String, Option<StopMatch>, String) {
        let ids = tok.encode(text, false).unwrap();
        let mut detok = IncrementalDetokenizer::new(
            stops.iter().map(|s| s.to_string()).collect(),
            include,
            true,
        );
        let mut out = String::new();
        let mut stop = None;
        for n in 1..=ids.len() {
            stop = detok.update(tok, &ids[..n]);
            out.push_str(&detok.take_delta(stop.is_some()));
            if stop.is_some() {
                break;
            }
        }
        if stop.is_none() {
            out.push_str(&detok.take_delta(true));
        }
        (out, stop, detok.text().to_string())
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let (_dir, tok) = tokenizer();
        let text = "héllo wörld — 日本語 🙂 the end";
        let ids = tok.encode(text, false).unwrap();
        let mut detok = IncrementalDetokenizer::new(vec![], false, true);
        let mut out = String::new();
        for n in 1..=ids.len() {
            detok.update(&tok, &ids[..n]);
            let delta = detok.take_delta(false);
            assert!(!delta.contains('\u{FFFD}'), "split character in {delta:?}");
            out.push_str(&delta);
        }
        out.push_str(&detok.take_delta(true));
        assert_eq!(out, text);
    }

    #[test]
    fn stop_string_truncates_and_is_never_streamed() {
        let (_dir, tok) = tokenizer();
        let (out, stop, text) = stream(
            &tok,
            "The answer is 42.\nQuestion: next",
            &["Question:"],
            false,
        );
        assert_eq!(
            stop,
            Some(StopMatch {
                stop: "Question:".into()
            })
        );
        assert_eq!(out, "The answer is 42.\n");
        assert_eq!(text, "The answer is 42.\n");
    }

    #[test]
    fn include_stop_str_in_output_keeps_it() {
        let (_dir, tok) = tokenizer();
        let (out, stop, _) = stream(&tok, "a b STOP c", &["STOP"], true);
        assert!(stop.is_some());
        assert_eq!(out, "a b STOP");
    }

    #[test]
    fn earliest_stop_wins_and_no_stop_streams_everything() {
        let (_dir, tok) = tokenizer();
        let (out, stop, _) = stream(&tok, "one two three", &["three", "two"], false);
        assert_eq!(stop.unwrap().stop, "two");
        assert_eq!(out, "one ");
        let (out, stop, _) = stream(&tok, "one two three", &["four"], false);
        assert!(stop.is_none());
        assert_eq!(out, "one two three");
    }
}
