// The BPE model: merges adjacent symbols by rank (lowest first, leftmost on ties), as Hugging
// Face's BPE does, plus the cache of already-encoded words.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace duality {

class Bpe {
public:
    // Working memory reused across words.
    struct Scratch {
        struct Symbol {
            int32_t id;
            int32_t prev, next;  // neighbours in the word, -1 at the ends
            bool alive;
        };
        struct Candidate {
            int32_t rank;
            int32_t pos;  // the left symbol
        };
        std::vector<Symbol> symbols;
        std::vector<Candidate> heap;
    };

    // Declares that `left` followed by `right` merges into `merged`, with priority `rank`
    // (lower merges first). A later declaration of the same pair replaces the earlier one.
    void add_merge(int32_t left, int32_t right, int32_t merged, int32_t rank);
    size_t merge_count() const { return merges_.size(); }

    // Applies the merges to the symbol ids of one word, in place.
    void merge(std::vector<int32_t>* ids, Scratch& scratch) const;

private:
    struct Merge {
        int32_t rank;
        int32_t merged;
    };
    static uint64_t key(int32_t left, int32_t right) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
               static_cast<uint32_t>(right);
    }
    const Merge* find(int32_t left, int32_t right) const {
        auto it = merges_.find(key(left, right));
        return it == merges_.end() ? nullptr : &it->second;
    }
    std::unordered_map<uint64_t, Merge> merges_;
};

// Thread-safe map from a word's bytes to its ids. Bounded: it is emptied when full.
class WordCache {
public:
    static constexpr size_t kMaxWordBytes = 64;
    static constexpr size_t kMaxEntries = 1 << 18;

    // Appends the cached ids of `word` to `out`; false when absent.
    bool lookup(std::string_view word, std::vector<int32_t>* out) const;
    void insert(std::string_view word, std::span<const int32_t> ids);
    void clear();

private:
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    mutable std::shared_mutex mu_;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> map_;
};

}  // namespace duality
