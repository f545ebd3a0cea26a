// BPE merging with a min-heap of candidate pairs, and the word cache (see bpe.h).
#include "tokenizer/bpe.h"

#include <algorithm>
#include <mutex>

namespace duality {
namespace {

// Heap order: the lowest rank first, then the leftmost position (Hugging Face's order).
struct Later {
    bool operator()(const Bpe::Scratch::Candidate& a, const Bpe::Scratch::Candidate& b) const {
        return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    }
};

}  // namespace

void Bpe::add_merge(int32_t left, int32_t right, int32_t merged, int32_t rank) {
    merges_[key(left, right)] = Merge{rank, merged};
}

void Bpe::merge(std::vector<int32_t>* ids, Scratch& s) const {
    const size_t n = ids->size();
    if (n < 2) return;
    auto& sym = s.symbols;
    auto& heap = s.heap;
    sym.resize(n);
    heap.clear();
    for (size_t i = 0; i < n; ++i) {
        sym[i] = {(*ids)[i], static_cast<int32_t>(i) - 1,
                  i + 1 < n ? static_cast<int32_t>(i + 1) : -1, true};
    }
    for (size_t i = 0; i + 1 < n; ++i) {
        if (const Merge* m = find(sym[i].id, sym[i + 1].id))
            heap.push_back({m->rank, static_cast<int32_t>(i)});
    }
    std::make_heap(heap.begin(), heap.end(), Later{});
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), Later{});
        const Scratch::Candidate top = heap.back();
        heap.pop_back();
        Scratch::Symbol& left = sym[top.pos];
        if (!left.alive || left.next < 0) continue;
        Scratch::Symbol& right = sym[left.next];
        // Entries go stale when a neighbour merged first; the pair's rank identifies it.
        const Merge* m = find(left.id, right.id);
        if (m == nullptr || m->rank != top.rank) continue;
        left.id = m->merged;
        right.alive = false;
        left.next = right.next;
        if (right.next >= 0) sym[right.next].prev = top.pos;
        if (left.prev >= 0) {
            if (const Merge* pm = find(sym[left.prev].id, left.id)) {
                heap.push_back({pm->rank, left.prev});
                std::push_heap(heap.begin(), heap.end(), Later{});
            }
        }
        if (left.next >= 0) {
            if (const Merge* nm = find(left.id, sym[left.next].id)) {
                heap.push_back({nm->rank, top.pos});
                std::push_heap(heap.begin(), heap.end(), Later{});
            }
        }
    }
    ids->clear();
    for (int32_t i = 0; i >= 0; i = sym[i].next) ids->push_back(sym[i].id);
}

bool WordCache::lookup(std::string_view word, std::vector<int32_t>* out) const {
    if (word.size() > kMaxWordBytes) return false;
    std::shared_lock lock(mu_);
    auto it = map_.find(word);
    if (it == map_.end()) return false;
    out->insert(out->end(), it->second.begin(), it->second.end());
    return true;
}

void WordCache::insert(std::string_view word, std::span<const int32_t> ids) {
    if (word.size() > kMaxWordBytes) return;
    std::unique_lock lock(mu_);
    if (map_.size() >= kMaxEntries) map_.clear();
    map_.try_emplace(std::string(word), ids.begin(), ids.end());
}

void WordCache::clear() {
    std::unique_lock lock(mu_);
    map_.clear();
}

}  // namespace duality
