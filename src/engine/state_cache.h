// The conversation state cache: recurrent states keyed by the tokens that produced them.
//
// An entry holds the model state after consuming exactly its key tokens. lookup() finds the
// longest entry whose key is a prefix of a new prompt (a rolling hash per prefix length, then an
// exact comparison), so a request that extends an earlier conversation resumes from it and
// reads only the new tokens. Two tiers: up to `device_slots` entries live in spare model slots
// (restored by a device-side slot copy; a finished sequence's slot is adopted as one, so its
// final state is cached without a copy); the rest are spilled to host memory (read_slot /
// write_slot) under a byte budget. Least recently used entries move down a tier or out, and
// entries unused for `ttl_s` are dropped. Used by the scheduler thread only (not thread-safe).
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "duality/engine.h"
#include "duality/model.h"

namespace duality::engine {

struct StateCacheOptions {
    int64_t host_bytes = 0;         // budget for entries spilled to host memory
    std::vector<int> device_slots;  // model slots the cache owns at first (adopt() trades them)
    double ttl_s = 3600;
};

class StateCache {
  public:
    StateCache(Model& model, StateCacheOptions options);

    bool enabled() const { return options_.host_bytes > 0 || !options_.device_slots.empty(); }

    struct Match {
        uint64_t id = 0;
        int64_t length = 0;  // tokens the entry covers
    };
    // The longest entry whose key is a prefix of `tokens` and at most `max_length` long.
    std::optional<Match> lookup(std::span<const int32_t> tokens, int64_t max_length,
                                SteadyClock::time_point now);
    // Loads entry `id` (from lookup, same step) into model slot `slot`.
    Status restore(uint64_t id, int slot, SteadyClock::time_point now);
    // Caches the state in model slot `slot`, which has consumed exactly `key`. A key already
    // cached is only marked as used.
    Status insert(std::span<const int32_t> key, int slot, SteadyClock::time_point now);
    // Like insert() for a slot whose owner is done with it: with device slots the cache takes
    // `slot` itself (no copy) and hands back one of its own, a free one or else the least
    // recently used entry's (that entry moves to the host or out, as in insert()); without
    // device slots it copies to the host and returns `slot`, as it does for a key already cached
    // (which is only marked used). The caller owns the returned slot, always a valid one: a
    // state that cannot be cached is not cached.
    int adopt(std::span<const int32_t> key, int slot, SteadyClock::time_point now);
    // Drops entries unused for longer than the TTL.
    void expire(SteadyClock::time_point now);

    uint64_t entries() const { return static_cast<uint64_t>(entries_.size()); }
    uint64_t host_bytes() const { return static_cast<uint64_t>(host_bytes_); }
    uint64_t evictions() const { return evictions_; }

  private:
    struct Entry {
        uint64_t id = 0;
        std::vector<int32_t> key;
        uint64_t hash = 0;     // of the whole key (see prefix_hash)
        int device_slot = -1;  // a model slot, or -1 when on the host
        SequenceState host;    // when on the host
        int64_t bytes = 0;     // host bytes when on the host
        SteadyClock::time_point last_used;
        std::list<uint64_t>::iterator lru;  // position in lru_ (front: most recent)
    };

    static uint64_t extend_hash(uint64_t h, int32_t token);
    static uint64_t index_key(int64_t length, uint64_t hash);
    static uint64_t key_hash(std::span<const int32_t> key);
    // insert() with the key's hash already computed.
    Status insert_hashed(std::span<const int32_t> key, uint64_t hash, int slot,
                         SteadyClock::time_point now);
    Entry new_entry(std::span<const int32_t> key, uint64_t hash);
    void add(Entry e, SteadyClock::time_point now);  // indexes e as the most recently used
    Entry* find_exact(std::span<const int32_t> key, uint64_t hash);
    void touch(Entry& e, SteadyClock::time_point now);
    void erase(uint64_t id, bool eviction);
    // Frees a device slot by moving the least recently used device entry to the host (or
    // dropping it); returns the slot, or -1 when the cache has no device slots.
    int free_device_slot();
    // Host bytes of one state as read_slot returns it (f32).
    int64_t state_bytes() const;
    // Makes room for `bytes` more host bytes by evicting least recently used host entries;
    // false when `bytes` exceeds the whole budget.
    bool make_host_room(int64_t bytes, uint64_t keep_id);

    Model& model_;
    StateCacheOptions options_;
    std::unordered_map<uint64_t, Entry> entries_;                // by id
    std::unordered_map<uint64_t, std::vector<uint64_t>> index_;  // (length, hash) -> ids
    std::map<int64_t, int> length_count_;                        // key length -> entries
    std::list<uint64_t> lru_;                                    // ids, most recent first
    std::vector<int> free_slots_;
    int64_t host_bytes_ = 0;
    uint64_t next_id_ = 1, evictions_ = 0;
};

}  // namespace duality::engine
