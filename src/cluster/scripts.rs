//! The keys and scripts every instance shares. Every key carries the hash tag `{ps}`, so the
//! same scripts run unchanged on a Redis Cluster (all on one shard), and every key a script
//! touches is passed in `KEYS`. Each script starts with the `#!lua` shebang, so Redis refuses
//! one that writes before it runs when it is out of memory, instead of failing it half-done.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ps}:topics` | hash | topic name → epoch (the incarnation) |
//! | `{ps}:m:<topic>` | hash | `s` the last seq; of the retained events, `b` their bytes, `n` their number, `o` a seq at or before the oldest |
//! | `{ps}:h:<topic>` | stream | the retained events: ID `<seq>-0`, fields `e` (the event's JSON) and `i` (its message id) |
//! | `{ps}:i:<topic>` | hash | for the retained events only, message id → seq and `#<seq>` → `<bytes> <message id>` (what trimming it takes away, without reading the stream); and `~`, a long value that keeps it a hash table |
//!
//! A topic's events are published on `{ps}:c:<topic>` as `<epoch>:<seq>:<event JSON>`; its
//! deletion as `<epoch>:0:D`, after its last event; a new epoch given to it in place
//! (`RENEW`) as `<epoch>:0:R`. Creations and deletions are announced on
//! `{ps}:ctl` (`created:<epoch>:<name>`, `deleted:<epoch>:<name>`).

/// The registry of topics.
pub const TOPICS: &str = "{ps}:topics";
/// A random value set once (`SET NX`) by the first instance to connect: the data set's
/// identity. Another value after a reconnect means Redis lost its data meanwhile.
pub const BOOT: &str = "{ps}:boot";
/// Topic creations (`created:<epoch>:<name>`) and deletions (`deleted:<epoch>:<name>`); the
/// epoch first, since a topic name may hold colons and an epoch does not.
pub const CONTROL: &str = "{ps}:ctl";

/// One topic's keys and channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicKeys {
    pub meta: String,
    pub history: String,
    pub ids: String,
    pub channel: String,
}

impl TopicKeys {
    pub fn new(topic: &str) -> TopicKeys {
        TopicKeys {
            meta: format!("{{ps}}:m:{topic}"),
            history: format!("{{ps}}:h:{topic}"),
            ids: format!("{{ps}}:i:{topic}"),
            channel: format!("{{ps}}:c:{topic}"),
        }
    }
}

/// KEYS topics, meta, history, ids; ARGV name, epoch, max topics.
/// `{1, epoch}` created; `{0, "exists"}`; `{0, "limit"}` at `MAX_TOPICS` (checked and taken in
/// one step, so concurrent creates on several instances never pass it).
pub const CREATE: &str = r#"#!lua
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {0, 'exists'} end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {0, 'limit'} end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[2], 's', 0, 'b', 0, 'n', 0, 'o', 1)
-- A value past hash-max-listpack-value keeps the ids hash a hash table: a lookup by message
-- id is then not a scan of every retained id (it was a fifth of a publish's cost).
redis.call('HSET', KEYS[4], '~', string.rep('~', 80))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', '{ps}:ctl', 'created:' .. ARGV[2] .. ':' .. ARGV[1])
return {1, ARGV[2]}
"#;

/// KEYS topics, meta, history, ids; ARGV name, channel.
/// `{1, epoch}` deleted (the channel carries `<epoch>:0:D` after the last event); `{0}` unknown.
pub const DELETE: &str = r#"#!lua
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if not epoch then return {0} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('PUBLISH', ARGV[2], epoch .. ':0:D')
redis.call('PUBLISH', '{ps}:ctl', 'deleted:' .. epoch .. ':' .. ARGV[1])
return {1, epoch}
"#;

/// KEYS topics, meta, history, ids; ARGV name, history size, history bytes, channel, then for
/// each event in turn its message id, head and tail: a batch of one topic's publishes, so the
/// script's own cost and the topic's lookups are paid once for all of them. The event is
/// `head .. seq .. tail`, built by the publishing instance with the payload as the client wrote
/// it, so a replayed event is byte for byte the live one. `{1, epoch, r...}` with for each
/// event its seq when published and minus the seq of the retained event with its message id
/// when a duplicate (nothing published; an id twice in one batch is a duplicate the second
/// time), or fewer entries than events when an append failed (the rest were not published);
/// `{0}` unknown topic. Each event is published as it is appended, so the channel
/// carries them one by one, in seq order. Trimming walks seqs from `o` (a seq not stored, an
/// event larger than the byte bound, is one step) and never past the event just appended, so
/// the script always ends; what it removes it reads from the ids hash, which costs less than
/// reading the stream's oldest entry.
pub const PUBLISH: &str = r#"#!lua
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if not epoch then return {0} end
local size, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
local meta = redis.call('HMGET', KEYS[2], 's', 'b', 'n', 'o')
local seq = tonumber(meta[1] or '0')
local bytes, len = tonumber(meta[2] or '0'), tonumber(meta[3] or '0')
local oldest = tonumber(meta[4] or seq + 1)
local out = {1, epoch}
for i = 5, #ARGV - 2, 3 do
  local id = ARGV[i]
  local dup = redis.call('HGET', KEYS[4], id)
  if dup then
    out[#out + 1] = -tonumber(dup)
  else
    seq = seq + 1
    local s = string.format('%d', seq)
    local event = ARGV[i + 1] .. s .. ARGV[i + 2]
    if size > 0 and #event <= max_bytes then
      -- An append refused (the stream ahead of the meta, as only a hand-made change leaves
      -- it) ends the batch with the meta true to what was published; the rest go unanswered.
      local added = redis.pcall('XADD', KEYS[3], s .. '-0', 'e', event, 'i', id)
      if type(added) == 'table' and added.err then
        seq = seq - 1
        break
      end
      if len == 0 then oldest = seq end
      redis.call('HSET', KEYS[4], id, s, '#' .. s, #event .. ' ' .. id)
      bytes = bytes + #event
      len = len + 1
      while (len > size or bytes > max_bytes) and oldest < seq do
        local o = string.format('%d', oldest)
        local held = redis.call('HGET', KEYS[4], '#' .. o)
        if held then
          local old_bytes, old_id = string.match(held, '^(%d+) (.*)$')
          redis.call('XDEL', KEYS[3], o .. '-0')
          redis.call('HDEL', KEYS[4], '#' .. o, old_id)
          bytes = bytes - tonumber(old_bytes)
          len = len - 1
        end
        oldest = oldest + 1
      end
    end
    redis.call('PUBLISH', ARGV[4], epoch .. ':' .. s .. ':' .. event)
    out[#out + 1] = seq
  end
end
redis.call('HSET', KEYS[2], 's', seq, 'b', bytes, 'n', len, 'o', oldest)
return out
"#;

/// KEYS topics, meta, history; ARGV name, from seq, count.
/// `{1, epoch, last seq, entries}` with at most `count` retained events from `from seq` on
/// (the reader knows that one already: it shows whether Redis still holds the same event),
/// oldest first (each `{"<seq>-0", {"e", event, "i", id}}`); `{0}` unknown topic.
pub const READ: &str = r#"#!lua flags=no-writes
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if not epoch then return {0} end
local last = tonumber(redis.call('HGET', KEYS[2], 's') or '0')
local entries = redis.call('XRANGE', KEYS[3], ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
return {1, epoch, last, entries}
"#;

/// KEYS topics, meta, history; ARGV name, epoch seen, new epoch, channel. Gives a topic whose
/// seqs went back (Redis restored older data) a new epoch, once however many instances find
/// it: `{1, epoch}` with the epoch now in force (the channel carries `<epoch>:0:R` when this
/// call changed it); `{0}` unknown topic.
pub const RENEW: &str = r#"#!lua
local epoch = redis.call('HGET', KEYS[1], ARGV[1])
if not epoch then return {0} end
if epoch == ARGV[2] then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], ARGV[1], epoch)
  redis.call('PUBLISH', ARGV[4], epoch .. ':0:R')
end
return {1, epoch}
"#;

/// Every script, to load on each connection (`SCRIPT LOAD`) and call by digest (`EVALSHA`).
pub const ALL: [&str; 5] = [CREATE, DELETE, PUBLISH, READ, RENEW];

/// A script of [`ALL`], by its place there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Create = 0,
    Delete = 1,
    Publish = 2,
    Read = 3,
    Renew = 4,
}

/// The scripts' digests, computed once.
fn digests() -> &'static [String; 5] {
    static DIGESTS: std::sync::OnceLock<[String; 5]> = std::sync::OnceLock::new();
    DIGESTS.get_or_init(|| ALL.map(digest))
}

/// An `EVALSHA` of `script` on `topic`'s keys, then `argv`: the command's parts, without an
/// allocation. Every script takes the registry, the meta and the history; all but `READ` and
/// `RENEW` the message ids too.
pub struct Call<'a> {
    parts: [&'a [u8]; 16],
    len: usize,
}

impl<'a> Call<'a> {
    pub fn new(script: Script, topic: &'a TopicKeys, argv: &[&'a [u8]]) -> Call<'a> {
        let mut parts: [&[u8]; 16] = [b""; 16];
        let keys: &[&[u8]] = &[
            TOPICS.as_bytes(),
            topic.meta.as_bytes(),
            topic.history.as_bytes(),
            topic.ids.as_bytes(),
        ];
        let keys = if matches!(script, Script::Read | Script::Renew) {
            &keys[..3]
        } else {
            keys
        };
        assert!(
            3 + keys.len() + argv.len() <= 16,
            "a script takes at most 9 arguments"
        );
        let head: [&[u8]; 3] = [
            b"EVALSHA",
            digests()[script as usize].as_bytes(),
            if keys.len() == 3 { b"3" } else { b"4" },
        ];
        let mut len = 0;
        for part in head.iter().chain(keys).chain(argv) {
            parts[len] = part;
            len += 1;
        }
        Call { parts, len }
    }

    pub fn parts(&self) -> &[&'a [u8]] {
        &self.parts[..self.len]
    }

    /// The parts, then `more` (a batch's events past the script's fixed arguments).
    pub fn followed_by(&self, more: impl IntoIterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
        let mut parts = self.parts().to_vec();
        parts.extend(more);
        parts
    }
}

/// The digest Redis names a script by: SHA-1, in lowercase hex.
pub fn digest(script: &str) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(script.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_names_the_digest_the_keys_and_the_arguments() {
        let k = TopicKeys::new("t");
        let call = Call::new(Script::Read, &k, &[b"t", b"0", b"100"]);
        let digest = digest(READ);
        let want: [&[u8]; 9] = [
            b"EVALSHA",
            digest.as_bytes(),
            b"3",
            b"{ps}:topics",
            b"{ps}:m:t",
            b"{ps}:h:t",
            b"t",
            b"0",
            b"100",
        ];
        assert_eq!(call.parts(), want);
        let call = Call::new(Script::Delete, &k, &[b"t", k.channel.as_bytes()]);
        assert_eq!(
            (call.parts()[2], call.parts()[6]),
            (&b"4"[..], &b"{ps}:i:t"[..])
        );
    }

    #[test]
    fn every_key_of_a_topic_is_in_the_one_hash_slot() {
        let k = TopicKeys::new("orders");
        for key in [&k.meta, &k.history, &k.ids, &k.channel] {
            assert!(
                key.starts_with("{ps}:") && key.ends_with(":orders"),
                "{key}"
            );
        }
        assert!(TOPICS.starts_with("{ps}") && CONTROL.starts_with("{ps}"));
    }

    #[test]
    fn scripts_declare_themselves_lua_and_the_read_writes_nothing() {
        for s in ALL {
            assert!(s.starts_with("#!lua"), "{s}");
        }
        assert!(READ.starts_with("#!lua flags=no-writes\n"));
    }
}
