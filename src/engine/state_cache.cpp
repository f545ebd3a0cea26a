// The conversation state cache (see state_cache.h).
#include "engine/state_cache.h"

#include "engine/roofline.h"

#include <algorithm>

namespace duality::engine {

StateCache::StateCache(Model& model, StateCacheOptions options)
    : model_(model), options_(std::move(options)) {
    free_slots_ = options_.device_slots;
    std::reverse(free_slots_.begin(), free_slots_.end());  // hand out the lowest slot first
}

uint64_t StateCache::extend_hash(uint64_t h, int32_t token) {
    h ^= static_cast<uint64_t>(static_cast<uint32_t>(token)) + 0x9e3779b97f4a7c15ull;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

uint64_t StateCache::index_key(int64_t length, uint64_t hash) {
    uint64_t k = hash + static_cast<uint64_t>(length) * 0x94d049bb133111ebull;
    k ^= k >> 29;
    return k * 0x9e3779b97f4a7c15ull;
}

std::optional<StateCache::Match> StateCache::lookup(std::span<const int32_t> tokens,
                                                    int64_t max_length,
                                                    SteadyClock::time_point now) {
    expire(now);
    const int64_t n = std::min<int64_t>(max_length, static_cast<int64_t>(tokens.size()));
    std::optional<Match> best;
    uint64_t h = 0;
    for (int64_t len = 1; len <= n; ++len) {
        h = extend_hash(h, tokens[static_cast<size_t>(len - 1)]);
        if (!length_count_.contains(len)) continue;
        auto it = index_.find(index_key(len, h));
        if (it == index_.end()) continue;
        for (uint64_t id : it->second) {
            const Entry& e = entries_.at(id);
            if (static_cast<int64_t>(e.key.size()) == len &&
                std::equal(e.key.begin(), e.key.end(), tokens.begin())) {
                best = Match{id, len};
                break;
            }
        }
    }
    return best;
}

Status StateCache::restore(uint64_t id, int slot, SteadyClock::time_point now) {
    auto it = entries_.find(id);
    if (it == entries_.end())
        return invalid_argument("state cache: no entry " + std::to_string(id));
    Entry& e = it->second;
    if (e.device_slot >= 0) {
        DUALITY_RETURN_IF_ERROR(model_.copy_slot(e.device_slot, slot));
    } else {
        DUALITY_RETURN_IF_ERROR(model_.write_slot(slot, e.host));
    }
    touch(e, now);
    return Status::ok();
}

StateCache::Entry* StateCache::find_exact(std::span<const int32_t> key, uint64_t hash) {
    auto it = index_.find(index_key(static_cast<int64_t>(key.size()), hash));
    if (it == index_.end()) return nullptr;
    for (uint64_t id : it->second) {
        Entry& e = entries_.at(id);
        if (std::equal(e.key.begin(), e.key.end(), key.begin(), key.end())) return &e;
    }
    return nullptr;
}

uint64_t StateCache::key_hash(std::span<const int32_t> key) {
    uint64_t h = 0;
    for (int32_t t : key) h = extend_hash(h, t);
    return h;
}

StateCache::Entry StateCache::new_entry(std::span<const int32_t> key, uint64_t hash) {
    Entry e;
    e.id = next_id_++;
    e.key.assign(key.begin(), key.end());
    e.hash = hash;
    return e;
}

void StateCache::add(Entry e, SteadyClock::time_point now) {
    e.last_used = now;
    lru_.push_front(e.id);
    e.lru = lru_.begin();
    index_[index_key(static_cast<int64_t>(e.key.size()), e.hash)].push_back(e.id);
    ++length_count_[static_cast<int64_t>(e.key.size())];
    entries_.emplace(e.id, std::move(e));
}

Status StateCache::insert(std::span<const int32_t> key, int slot, SteadyClock::time_point now) {
    if (!enabled() || key.empty()) return Status::ok();
    return insert_hashed(key, key_hash(key), slot, now);
}

Status StateCache::insert_hashed(std::span<const int32_t> key, uint64_t h, int slot,
                                 SteadyClock::time_point now) {
    if (Entry* e = find_exact(key, h)) {
        touch(*e, now);
        return Status::ok();
    }
    Entry e = new_entry(key, h);
    if (!options_.device_slots.empty()) {
        e.device_slot = free_device_slot();
        if (e.device_slot < 0) return Status::ok();  // no slot left (see free_device_slot)
        if (Status s = model_.copy_slot(slot, e.device_slot); !s.is_ok()) {
            free_slots_.push_back(e.device_slot);  // still the cache's
            return s;
        }
    } else {
        DUALITY_RETURN_IF_ERROR(model_.read_slot(slot, e.host));
        e.bytes = static_cast<int64_t>((e.host.conv.size() + e.host.ssm.size() + e.key.size()) *
                                       sizeof(float));
        if (!make_host_room(e.bytes, 0)) return Status::ok();  // larger than the whole budget
        host_bytes_ += e.bytes;
    }
    add(std::move(e), now);
    return Status::ok();
}

int StateCache::adopt(std::span<const int32_t> key, int slot, SteadyClock::time_point now) {
    if (!enabled() || key.empty()) return slot;
    const uint64_t h = key_hash(key);
    if (Entry* e = find_exact(key, h)) {
        touch(*e, now);
        return slot;
    }
    if (options_.device_slots.empty()) {
        (void)insert_hashed(key, h, slot, now);  // a host copy
        return slot;
    }
    const int spare = free_device_slot();
    if (spare < 0) return slot;  // no slot to trade (see free_device_slot): not cached
    Entry e = new_entry(key, h);
    e.device_slot = slot;
    add(std::move(e), now);
    return spare;
}

void StateCache::touch(Entry& e, SteadyClock::time_point now) {
    e.last_used = now;
    lru_.splice(lru_.begin(), lru_, e.lru);
}

void StateCache::erase(uint64_t id, bool eviction) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    Entry& e = it->second;
    const int64_t len = static_cast<int64_t>(e.key.size());
    auto& ids = index_[index_key(len, e.hash)];
    ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
    if (ids.empty()) index_.erase(index_key(len, e.hash));
    if (--length_count_[len] == 0) length_count_.erase(len);
    if (e.device_slot >= 0) free_slots_.push_back(e.device_slot);
    host_bytes_ -= e.device_slot >= 0 ? 0 : e.bytes;
    lru_.erase(e.lru);
    entries_.erase(it);
    if (eviction) ++evictions_;
}

int64_t StateCache::state_bytes() const {
    return roofline::state_slot_bytes(model_.config(), DType::kF32);
}

int StateCache::free_device_slot() {
    if (!free_slots_.empty()) {
        const int slot = free_slots_.back();
        free_slots_.pop_back();
        return slot;
    }
    // Demote the least recently used device entry to the host, or drop it.
    for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
        Entry& e = entries_.at(*it);
        if (e.device_slot < 0) continue;
        const int slot = e.device_slot;
        // Read the state back only when the host budget can take it (a large model's state is
        // hundreds of MB: the check comes first).
        const int64_t bytes = state_bytes() + static_cast<int64_t>(e.key.size()) * 4;
        SequenceState state;
        if (make_host_room(bytes, e.id) && model_.read_slot(slot, state).is_ok()) {
            e.device_slot = -1;
            e.host = std::move(state);
            e.bytes = bytes;
            host_bytes_ += bytes;
        } else {
            e.device_slot = -1;  // its slot is reused below, not freed
            erase(e.id, true);
        }
        return slot;
    }
    return -1;  // every slot the cache owns is free or holds an entry, so only if one was lost
}

bool StateCache::make_host_room(int64_t bytes, uint64_t keep_id) {
    if (bytes > options_.host_bytes) return false;
    while (host_bytes_ + bytes > options_.host_bytes) {
        uint64_t victim = 0;
        for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
            const Entry& e = entries_.at(*it);
            if (e.device_slot < 0 && e.id != keep_id) {
                victim = e.id;
                break;
            }
        }
        if (victim == 0) return false;
        erase(victim, true);
    }
    return true;
}

void StateCache::expire(SteadyClock::time_point now) {
    const auto ttl = std::chrono::duration<double>(options_.ttl_s);
    while (!lru_.empty()) {
        const Entry& e = entries_.at(lru_.back());
        if (now - e.last_used <= ttl) break;
        erase(e.id, true);
    }
}

}  // namespace duality::engine
