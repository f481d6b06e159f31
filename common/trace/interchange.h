// Text forms of a trace, for converters and external tools (traces/README.md, "Interchange").
//
// - JSON Lines (.jsonl): the complete, self-contained form: a header line, then per request a
//   request line, its partition_map lines, and its step lines (one per layer and step, all KV
//   heads) with map_growth lines just before the step they take effect at.
// - CSV (.csv): one row per selected partition: request,layer,head,step,partition,first_page,
//   page_count. CSV cannot carry the metadata, so export writes it beside the CSV as a JSONL
//   metadata file (FILE.csv.meta.jsonl: the JSONL form without step lines, each request line with
//   the rows export wrote for it, csv_rows) and import reads it. CSV has no end marker: import
//   checks each request's rows against its csv_rows, where the metadata has them, so that a CSV
//   cut at a line boundary is an error.
// - page references (page-refs): one row per page access, for external cache simulators
//   (libCacheSim's csv reader): time,obj_id,obj_size,request,layer,head,step,page.
//
// Exports stream (memory: one decoded chunk per layer of one request). Imports stream into a
// TraceWriter; every error names the input file and line number, and what was expected.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <vector>

#include "common/trace/reader.h"
#include "common/trace/writer.h"

namespace spin::trace {

// The header line of the JSONL form (also the header part of `spin trace info --json`).
nlohmann::ordered_json header_to_json(const TraceHeader& header);
// Header and counts, as printed by `spin trace info --json`.
nlohmann::ordered_json info_to_json(const TraceReader& reader);

// Restricts csv and page-refs exports to some streams; an unset field matches everything.
struct StreamFilter {
  std::optional<uint64_t> request_id;
  std::optional<uint32_t> layer;
  std::optional<uint32_t> head;
};

void export_jsonl(const TraceReader& reader, std::ostream& out);
// The JSONL form without step lines (growth lines follow the map lines): the CSV's sidecar.
// csv_rows: [requests] the rows export_csv wrote for each request, written as the request lines'
// csv_rows; empty: none written (import then cannot tell a CSV cut at a line boundary).
void export_metadata_jsonl(const TraceReader& reader, std::ostream& out,
                           std::span<const uint64_t> csv_rows = {});
// Returns the rows written for each request, by index (0 for requests the filter leaves out).
std::vector<uint64_t> export_csv(const TraceReader& reader, const StreamFilter& filter,
                                 std::ostream& out);
void export_page_refs(const TraceReader& reader, const StreamFilter& filter, std::ostream& out);

// Where export puts, and import looks for, the metadata of `csv`: "<csv>.meta.jsonl".
std::filesystem::path metadata_path_for(const std::filesystem::path& csv);

void import_jsonl(const std::filesystem::path& in, const std::filesystem::path& out,
                  const WriterOptions& options = {});
void import_csv(const std::filesystem::path& csv, const std::filesystem::path& metadata,
                const std::filesystem::path& out, const WriterOptions& options = {});

// The object id of a page in the page-refs export: request index (23 bits), layer (8), KV head
// (8), page (24), most significant first; always a non-negative int64.
uint64_t page_object_id(uint64_t request_index, uint32_t layer, uint32_t head, uint64_t page);

}  // namespace spin::trace
