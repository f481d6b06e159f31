#include "sim/cli/trace_commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/trace/interchange.h"
#include "common/trace/memory_source.h"
#include "common/trace/reader.h"
#include "common/trace/writer.h"
#include "traces/gen/generator.h"

namespace po = boost::program_options;

namespace spin::cli {
namespace {

using trace::LayerCursor;
using trace::TraceReader;

// ---------------------------------------------------------------------------------------------
// spin trace info

std::string describe_algorithm(const trace::AlgorithmInfo& a) {
  std::string s = a.partition_kind == trace::PartitionKind::kFixed
                      ? fmt::format("{}-token partitions", a.partition_tokens)
                      : fmt::format("variable clusters (~{} tokens, re-indexed every {} tokens)",
                                    a.partition_tokens, a.reindex_interval_tokens);
  s += fmt::format(", {}-token pages, budget", a.page_tokens);
  if (a.budget_ratio > 0) s += fmt::format(" {:.4g}% of context", 100 * a.budget_ratio);
  if (a.budget_tokens > 0)
    s += fmt::format("{} {} tokens", a.budget_ratio > 0 ? " +" : "", a.budget_tokens);
  if (a.budget_ratio == 0 && a.budget_tokens == 0) s += " unspecified";
  return s + fmt::format(", static region {} sink + {} local tokens", a.sink_tokens,
                         a.local_window_tokens);
}

int trace_info(const Args& args) {
  po::options_description opts("Options");
  opts.add_options()("json", "print the header and the counts as one JSON object")(
      "verify", "also decode every chunk, checking checksums and ids (reads the whole file)");
  po::options_description hidden;
  hidden.add_options()("file", po::value<std::string>()->required(), "trace file");
  po::positional_options_description pos;
  pos.add("file", 1);
  const auto vm = parse_options(
      args, "trace info", "FILE [--json] [--verify]",
      "Prints a trace's header (format version, model shape, algorithms, source, seed), its "
      "counts (requests, streams, decode steps, selected partitions, chunks) and its size in "
      "bytes per selected partition. Only the header, metadata and index are read unless "
      "--verify is given.",
      opts, pos, hidden);
  if (!vm) return 0;
  const TraceReader reader((*vm)["file"].as<std::string>());
  if (vm->count("verify")) reader.verify();
  const trace::TraceInfo i = reader.info();
  const trace::TraceHeader& h = reader.header();
  if (vm->count("json")) {
    nlohmann::ordered_json j = trace::info_to_json(reader);
    if (vm->count("verify")) j["verified"] = true;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  uint32_t min_prompt = UINT32_MAX, max_prompt = 0, min_steps = UINT32_MAX, max_steps = 0;
  for (const trace::RequestInfo& r : reader.requests()) {
    min_prompt = std::min(min_prompt, r.prompt_tokens);
    max_prompt = std::max(max_prompt, r.prompt_tokens);
    min_steps = std::min(min_steps, r.decode_steps);
    max_steps = std::max(max_steps, r.decode_steps);
  }
  std::cout << fmt::format("file          {} ({} bytes)\n", reader.path().string(), i.file_bytes);
  std::cout << fmt::format("format        spin trace {}.{}\n", h.version_major, h.version_minor);
  std::cout << fmt::format("source        {} (seed {})\n", h.source, h.seed);
  std::cout << fmt::format(
      "model         {}: {} layers, {} query heads, {} KV heads, head dim {}, {}-byte elements\n",
      h.model.name, h.model.layers, h.model.query_heads, h.model.kv_heads, h.model.head_dim,
      h.model.dtype_bytes);
  for (size_t a = 0; a < h.algorithms.size(); ++a) {
    std::cout << fmt::format("algorithm {:<3} {}: {}\n", a, h.algorithms[a].name,
                             describe_algorithm(h.algorithms[a]));
  }
  if (i.requests > 0) {
    std::cout << fmt::format("requests      {} (prompt {}..{} tokens, {}..{} decode steps)\n",
                             i.requests, min_prompt, max_prompt, min_steps, max_steps);
  } else {
    std::cout << "requests      0\n";
  }
  std::cout << fmt::format("streams       {}\n", i.streams);
  std::cout << fmt::format("decode steps  {} request steps, {} stream steps\n", i.request_steps,
                           i.stream_steps);
  std::cout << fmt::format(
      "selections    {} ({:.1f} per stream step)\n", i.selections,
      i.stream_steps ? static_cast<double>(i.selections) / i.stream_steps : 0.0);
  if (i.map_chunks > 0) std::cout << fmt::format("clusters      {} (final maps)\n", i.clusters);
  std::cout << fmt::format("chunks        {} selection, {} partition map\n", i.selection_chunks,
                           i.map_chunks);
  std::cout << fmt::format(
      "size          {} bytes: chunks {}, metadata {}, index {}; {:.3f} bytes per selected "
      "partition\n",
      i.file_bytes, i.chunk_bytes, i.metadata_bytes, i.index_bytes, i.bytes_per_selection());
  if (vm->count("verify")) std::cout << "verified      every chunk decodes and checks\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// spin trace export / import

int trace_export(const Args& args) {
  po::options_description opts("Options");
  opts.add_options()("format", po::value<std::string>()->required(),
                     "csv | jsonl | page-refs (traces/README.md describes each)")(
      "out", po::value<std::string>(),
      "output file (default: standard output); csv also writes OUT.meta.jsonl, the metadata "
      "that `spin trace import` needs")("request", po::value<uint64_t>(),
                                        "csv, page-refs: only the request with this id")(
      "layer", po::value<uint32_t>(), "csv, page-refs: only this layer")(
      "head", po::value<uint32_t>(), "csv, page-refs: only this KV head");
  po::options_description hidden;
  hidden.add_options()("file", po::value<std::string>()->required(), "trace file");
  po::positional_options_description pos;
  pos.add("file", 1);
  const auto vm = parse_options(
      args, "trace export", "FILE --format csv|jsonl|page-refs [--out PATH]",
      "Writes a trace as text. csv: one row per selected partition (request, layer, head, step, "
      "partition, first_page, page_count), with the metadata beside it in OUT.meta.jsonl. jsonl: "
      "the complete interchange form (header, requests, partition maps, steps). page-refs: one "
      "row per page access (time, obj_id, obj_size, ...) for cache simulators such as "
      "libCacheSim. --request/--layer/--head restrict csv and page-refs to some streams.",
      opts, pos, hidden);
  if (!vm) return 0;
  const std::string format = (*vm)["format"].as<std::string>();
  if (format != "csv" && format != "jsonl" && format != "page-refs") {
    throw InputError(fmt::format(
        "spin trace export: unknown --format '{}'; known formats: csv, jsonl, page-refs", format));
  }
  trace::StreamFilter filter;
  if (vm->count("request")) filter.request_id = (*vm)["request"].as<uint64_t>();
  if (vm->count("layer")) filter.layer = (*vm)["layer"].as<uint32_t>();
  if (vm->count("head")) filter.head = (*vm)["head"].as<uint32_t>();
  const bool filtered = filter.request_id || filter.layer || filter.head;
  if (format == "jsonl" && filtered) {
    throw InputError(
        "spin trace export: --request, --layer and --head apply to csv and page-refs; jsonl is "
        "always the complete trace");
  }
  const std::filesystem::path input = (*vm)["file"].as<std::string>();
  const TraceReader reader(input);
  // With --out, the output (and the CSV's metadata) go to PATH.partial first and take their
  // names only once complete, so that a failed export leaves nothing behind.
  std::optional<PartialFile> file;
  if (vm->count("out")) {
    const std::filesystem::path path = (*vm)["out"].as<std::string>();
    refuse_input_as_output(input, path, "trace export: --out");
    file.emplace(path, "the exported trace");
  }
  std::ostream& out = file ? file->stream() : std::cout;
  std::optional<PartialFile> metadata;
  if (format == "jsonl") {
    trace::export_jsonl(reader, out);
  } else if (format == "csv") {
    const std::vector<uint64_t> rows = trace::export_csv(reader, filter, out);
    if (file && filtered) {
      // Imported with metadata, the streams left out would read back as empty selections.
      std::cerr << "spin trace export: a CSV of some streams (--request, --layer, --head) has no "
                   "metadata file: it cannot be imported back as a trace\n";
    } else if (file && !output_target((*vm)["out"].as<std::string>()).in_place) {
      const std::filesystem::path path = trace::metadata_path_for((*vm)["out"].as<std::string>());
      refuse_input_as_output(input, path, "trace export: --out");
      metadata.emplace(path, "the trace metadata");
      trace::export_metadata_jsonl(reader, metadata->stream(), rows);
    } else {
      // Standard output, or a device or pipe (no file to put a metadata file beside).
      std::cerr << "spin trace export: the CSV went to standard output, a device or a pipe "
                   "without its metadata; give --out FILE.csv to get FILE.csv.meta.jsonl for "
                   "`spin trace import`\n";
    }
  } else {
    trace::export_page_refs(reader, filter, out);
  }
  if (metadata) metadata->commit();
  if (file) {
    file->commit();
  } else {
    out.flush();
    if (!out) throw InputError("spin trace export: writing the output failed");
  }
  return 0;
}

int trace_import(const Args& args) {
  po::options_description opts("Options");
  opts.add_options()("out", po::value<std::string>()->required(), "the trace to write (.spt)")(
      "meta", po::value<std::string>(), "csv: the metadata file (default: IN.meta.jsonl)")(
      "format", po::value<std::string>(), "jsonl | csv (default: from IN's extension)")(
      "zstd-level", po::value<int>()->default_value(trace::WriterOptions{}.zstd_level),
      "zstd level of the chunks (0 = stored raw)")(
      "chunk-selections",
      po::value<uint64_t>()->default_value(trace::WriterOptions{}.chunk_selections),
      "selections per chunk");
  po::options_description hidden;
  hidden.add_options()("in", po::value<std::string>()->required(), "input file");
  po::positional_options_description pos;
  pos.add("in", 1);
  const auto vm = parse_options(
      args, "trace import", "IN.jsonl|IN.csv --out FILE.spt",
      "Converts a trace captured or generated elsewhere into a .spt file. JSON Lines input is "
      "self-contained; CSV input (one row per selected partition) takes its metadata from "
      "IN.meta.jsonl or --meta. Errors name the input file and line. The output appears only "
      "when the import succeeds.",
      opts, pos, hidden);
  if (!vm) return 0;
  const std::filesystem::path in = (*vm)["in"].as<std::string>();
  std::string format = vm->count("format") ? (*vm)["format"].as<std::string>()
                                           : in.extension().string().substr(in.has_extension());
  if (format != "jsonl" && format != "csv") {
    throw InputError(fmt::format(
        "spin trace import: cannot tell the format of {} ('{}'); use --format jsonl|csv",
        in.string(), format));
  }
  trace::WriterOptions options;
  options.zstd_level = (*vm)["zstd-level"].as<int>();
  options.chunk_selections = (*vm)["chunk-selections"].as<uint64_t>();
  trace::check_writer_options(options);
  const std::filesystem::path out = (*vm)["out"].as<std::string>();
  refuse_input_as_output(in, out, "trace import: --out");
  if (format == "jsonl") {
    if (vm->count("meta")) {
      throw InputError(
          "trace import: --meta names a CSV's metadata file; JSON Lines carry their own");
    }
    trace::import_jsonl(in, out, options);
  } else {
    const std::filesystem::path meta = vm->count("meta")
                                           ? std::filesystem::path((*vm)["meta"].as<std::string>())
                                           : trace::metadata_path_for(in);
    if (!vm->count("meta") && !std::filesystem::exists(meta) && std::filesystem::exists(in)) {
      throw InputError(fmt::format(
          "trace import: {}: a CSV trace (one row per selected partition) takes its header and "
          "request lines from a metadata file, and {} does not exist; write it (traces/README.md, "
          "\"CSV\") or give its path with --meta FILE",
          in.string(), meta.string()));
    }
    refuse_input_as_output(meta, out, "trace import: --out");
    trace::import_csv(in, meta, out, options);
  }
  const trace::TraceInfo i = TraceReader(out).info();
  std::cout << fmt::format(
      "wrote {}: {} requests, {} selections, {} bytes ({:.3f} per selection)\n", out.string(),
      i.requests, i.selections, i.file_bytes, i.bytes_per_selection());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// spin bench trace

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown CPU";
}

struct DecodeRun {
  uint64_t selections = 0;
  double seconds = 0;
};

// Decodes every step of every (request, layer): all heads, or one head in eight (the head
// (request + layer) mod kv_heads).
DecodeRun decode_pass(const TraceReader& reader, bool sampled) {
  DecodeRun run;
  const uint32_t heads = reader.header().model.kv_heads;
  const auto start = std::chrono::steady_clock::now();
  for (size_t r = 0; r < reader.requests().size(); ++r) {
    for (uint32_t layer = 0; layer < reader.header().model.layers; ++layer) {
      std::vector<uint32_t> chosen;
      if (sampled) chosen.push_back(static_cast<uint32_t>((r + layer) % heads));
      LayerCursor c = reader.open_layer(r, layer, chosen);
      while (c.next()) {
        for (uint32_t h : c.heads()) run.selections += c.selection(h).size();
      }
    }
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return run;
}

int bench_trace(const Args& args) {
  po::options_description opts("Options");
  opts.add_options()("selections", po::value<uint64_t>()->default_value(100'000'000),
                     "selected partitions to generate (rounded up to whole requests)")(
      "seed", po::value<uint64_t>()->default_value(1), "generator seed")(
      "repeats", po::value<int>()->default_value(3), "decode passes; the best is reported")(
      "zstd-level", po::value<int>()->default_value(trace::WriterOptions{}.zstd_level),
      "zstd level of the chunks (0 = stored raw)")(
      "chunk-selections",
      po::value<uint64_t>()->default_value(trace::WriterOptions{}.chunk_selections),
      "selections per chunk")("dir", po::value<std::string>(),
                              "directory for the trace file (default: the system temp directory)");
  const auto vm = parse_options(
      args, "bench trace", "[--selections N] [--seed S]",
      "Writes a trace of the calibrated ShadowKV generator (128K-token prompts, 8-token "
      "partitions = pages, budget 1.56% of the context, 8 KV heads, 4 layers, 512 decode steps "
      "per request; docs/trace-generators.md) to a temporary file, timing only the writer, then "
      "decodes it on one thread, all streams and a 1/8 sample. Prints write speed, bytes per "
      "selected partition and decode speed (docs/benchmarks.md). Times are wall clock (the "
      "writer's file I/O is part of its work): run it on an otherwise idle machine.",
      opts);
  if (!vm) return 0;
  const uint64_t want = (*vm)["selections"].as<uint64_t>();
  const uint64_t seed = (*vm)["seed"].as<uint64_t>();
  const int repeat = (*vm)["repeats"].as<int>();
  require_at_least("bench trace", "selections", static_cast<std::int64_t>(want), 1);
  require_at_least("bench trace", "repeats", repeat, 1);
  trace::WriterOptions wopts;
  wopts.zstd_level = (*vm)["zstd-level"].as<int>();
  wopts.chunk_selections = (*vm)["chunk-selections"].as<uint64_t>();
  trace::check_writer_options(wopts);

  constexpr uint32_t kPrompt = 128 * 1024, kSteps = 512, kLayers = 4;
  gen::GeneratorConfig g;  // the calibrated ShadowKV generator (docs/trace-generators.md)
  config::ModelConfig model = gen::default_model();
  model.layers = kLayers;
  g.algorithm = "shadowkv";
  g.seed = seed;
  g.workload.name = "fixed";
  g.workload.prompt_tokens = kPrompt;
  g.workload.output_tokens = kSteps;
  g.workload.requests = 1;
  {  // the number of requests follows from one request's selections
    const gen::Generator one(g, model);
    const trace::TraceData probe = trace::materialize(one, 0, 1);
    g.workload.requests = static_cast<uint32_t>(
        std::max<uint64_t>(1, (want + probe.requests[0].ids.size() - 1) /
                                  std::max<size_t>(1, probe.requests[0].ids.size())));
  }
  const gen::Generator generator(g, model);
  const uint64_t requests = generator.requests().size();
  const trace::TraceHeader& header = generator.header();
  const uint32_t kHeads = header.model.kv_heads;

  const std::filesystem::path dir = vm->count("dir")
                                        ? std::filesystem::path((*vm)["dir"].as<std::string>())
                                        : std::filesystem::temp_directory_path();
  const std::filesystem::path path = dir / fmt::format("spin-bench-{}-{}.spt", ::getpid(), seed);
  struct Remove {
    std::filesystem::path p;
    ~Remove() {
      std::error_code ec;
      std::filesystem::remove(p, ec);
    }
  } remove{path};

  std::cerr << fmt::format("writing {} generated requests to {}\n", requests, path.string());
  double write_seconds = 0;
  {
    trace::TraceWriter w(path, header, wopts);
    std::vector<uint32_t> offsets(kHeads + 1);
    for (uint64_t r = 0; r < requests; ++r) {
      // Generated outside the clock: only the writer's calls are timed.
      const trace::TraceData data = trace::materialize(generator, r, 1);
      const trace::RequestData& req = data.requests[0];
      const auto t0 = std::chrono::steady_clock::now();
      w.begin_request(req.info);
      for (uint32_t layer = 0; layer < kLayers; ++layer) {
        for (uint32_t step = 0; step < req.info.decode_steps; ++step) {
          const size_t k = (size_t{layer} * req.info.decode_steps + step) * kHeads;
          for (uint32_t h = 0; h <= kHeads; ++h) offsets[h] = req.offsets[k + h] - req.offsets[k];
          w.add_step(layer, step, offsets,
                     std::span<const uint32_t>(req.ids).subspan(req.offsets[k], offsets[kHeads]));
        }
      }
      w.end_request();
      write_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    const auto t0 = std::chrono::steady_clock::now();
    w.finish();
    write_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  const TraceReader reader(path);
  const trace::TraceInfo info = reader.info();
  DecodeRun all, sampled;
  for (int i = 0; i < repeat; ++i) {
    const DecodeRun a = decode_pass(reader, false);
    if (i == 0 || a.seconds < all.seconds) all = a;
    const DecodeRun s = decode_pass(reader, true);
    if (i == 0 || s.seconds < sampled.seconds) sampled = s;
  }
  if (all.selections != info.selections) {
    throw InvariantError(fmt::format("bench trace: decoded {} selections, the index says {}",
                                     all.selections, info.selections));
  }
  const auto rate = [](uint64_t n, double s) { return static_cast<double>(n) / s / 1e6; };
  std::cout << fmt::format(
      "spin bench trace: {} selections in {} requests × {} layers × {} KV heads × {} steps, "
      "seed {}, zstd level {}, {} selections per chunk\n",
      info.selections, requests, kLayers, kHeads, kSteps, seed, wopts.zstd_level,
      wopts.chunk_selections);
  std::cout << fmt::format("machine: {}, {} logical CPUs\n\n", cpu_model(),
                           std::thread::hardware_concurrency());
  std::cout << "| measure | value |\n| --- | --- |\n";
  std::cout << fmt::format(
      "| write (encode + compress + write, 1 thread) | {:.1f} M selections/s |\n",
      rate(info.selections, write_seconds));
  std::cout << fmt::format("| file size | {} bytes ({} chunks) |\n", info.file_bytes,
                           info.selection_chunks);
  std::cout << fmt::format("| bytes per selected partition | {:.3f} |\n",
                           info.bytes_per_selection());
  std::cout << fmt::format("| decode, all streams (1 thread) | {:.1f} M selections/s |\n",
                           rate(all.selections, all.seconds));
  std::cout << fmt::format("| decode, 1/8 of streams (1 thread) | {:.1f} M selections/s |\n",
                           rate(sampled.selections, sampled.seconds));
  return 0;
}

}  // namespace

void register_trace_commands(Registry& registry) {
  registry.add(Command{"trace info", "print a trace's header, counts and size", trace_info});
  registry.add(
      Command{"trace export", "write a trace as CSV, JSON Lines or page references", trace_export});
  registry.add(
      Command{"trace import", "convert a JSON Lines or CSV trace into a .spt file", trace_import});
  registry.add(
      Command{"bench trace", "measure trace write speed, size and decode speed", bench_trace});
}

}  // namespace spin::cli
