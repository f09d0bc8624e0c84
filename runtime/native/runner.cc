#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "files.h"
#include "litert.h"
#include "manifest.h"
#include "npy.h"

namespace tflc {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string describe(const DType* d, const std::vector<int64_t>& shape) {
  return std::string(d ? d->name : "an unsupported type") + " " + shape_str(shape);
}

Manifest load_manifest(int dirfd, const std::string& dir) {
  std::string where = dir + "/manifest.json";
  struct stat st;
  if (fstatat(dirfd, "manifest.json", &st, AT_SYMLINK_NOFOLLOW) != 0)
    throw Error(dir + ": no manifest.json; is this a tflc build folder?");
  Fd fd = open_member(dirfd, "manifest.json", where);
  return parse_manifest(read_all(fd.get(), kManifestMaxBytes, where), where);
}

// Which file feeds which model input: NAME=FILE for a manifest input NAME, else FILEs in manifest order.
std::map<std::string, std::string> assign_inputs(const std::vector<std::string>& args, const Manifest& m) {
  std::set<std::string> names;
  for (const TensorSpec& t : m.inputs) names.insert(t.name);
  std::map<std::string, std::string> named;
  std::vector<std::string> positional;
  for (const std::string& a : args) {
    size_t eq = a.find('=');
    if (eq != std::string::npos && names.count(a.substr(0, eq))) {
      if (!named.emplace(a.substr(0, eq), a.substr(eq + 1)).second)
        throw Error("input '" + a.substr(0, eq) + "' is given twice");
    } else {
      positional.push_back(a);
    }
  }
  std::string all;
  for (const TensorSpec& t : m.inputs) all += (all.empty() ? "" : ", ") + t.name;
  if (!named.empty() && !positional.empty())
    throw Error("--input " + positional[0] + ": name every input (NAME=FILE.npy) or none; the build's inputs are " + all);
  if (named.empty()) {
    if (positional.size() != m.inputs.size())
      throw Error("the build has " + std::to_string(m.inputs.size()) + " input(s) (" + all + "), got " +
                  std::to_string(positional.size()) + " --input file(s)");
    for (size_t i = 0; i < positional.size(); ++i) named[m.inputs[i].name] = positional[i];
  }
  for (const TensorSpec& t : m.inputs)
    if (!named.count(t.name)) throw Error("missing input '" + t.name + "'; the build needs " + all);
  return named;
}

// The model inputs, checked against the manifest (dtype and shape exactly: no conversion) from their
// headers, then read straight into LiteRT buffers.
std::map<std::string, Value> read_inputs(LiteRtEnvironment env, const std::map<std::string, std::string>& files,
                                         const Manifest& m) {
  std::map<std::string, Value> values;
  for (const TensorSpec& t : m.inputs) {
    const std::string& path = files.at(t.name);
    Value v;
    auto check = [&](const TensorMeta& h) {
      if (h.shape != t.shape)
        throw Error("input '" + t.name + "' (" + path + "): shape " + shape_str(t.shape) + " expected, got " +
                    shape_str(h.shape));
      if (h.dtype != t.dtype)
        throw Error("input '" + t.name + "' (" + path + "): dtype " + t.dtype->name + " expected, got " + h.dtype->name);
    };
    std::unique_ptr<Locked> lock;
    read_npy(path, check, [&](const TensorMeta& h) {
      v = make_value(env, h, "input '" + t.name + "'");
      lock = std::make_unique<Locked>(v.buf.get(), kLiteRtTensorBufferLockModeWrite, "input '" + t.name + "'");
      return lock->addr();
    });
    lock.reset();
    values.emplace(t.name, std::move(v));
  }
  return values;
}

void prepare_output_dir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST)
    throw Error("--output " + dir + ": cannot create the folder (" + strerror(errno) + ")");
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw Error("--output " + dir + ": not a folder");
}

const Port* find_port(const std::vector<Port>& ports, const std::string& name) {
  for (const Port& p : ports)
    if (p.name == name) return &p;
  return nullptr;
}

// An integer tensor handed from stage to stage is read with the scale and zero point its producer wrote
// it with: the stage file must carry the ones the manifest records (per-tensor: equal as float32).
void check_quantization(const Port& p, const TensorSpec& t, const std::string& label, const char* kind) {
  const std::optional<Quantization>& q = t.quantization;
  bool ok;
  if (!q) {
    ok = p.quantization == kLiteRtQuantizationNone;
  } else if (q->scale.size() == 1) {
    ok = p.quantization == kLiteRtQuantizationPerTensor && p.scale == static_cast<float>(q->scale[0]) &&
         p.zero_point == q->zero_point[0];
  } else {
    ok = p.quantization == kLiteRtQuantizationPerChannel;
  }
  if (!ok)
    throw Error(label + ": " + kind + " '" + t.name + "' has other quantization parameters in the file than in "
                "manifest.json");
}

// The stage file must have exactly the manifest's tensors, with its dtypes, shapes and quantization.
void match(const std::vector<Port>& ports, const std::vector<TensorSpec>& specs, const std::string& label,
           const char* kind) {
  for (const TensorSpec& t : specs) {
    const Port* p = find_port(ports, t.name);
    if (!p) throw Error(label + " has no " + kind + " tensor '" + t.name + "' named in the manifest");
    if (p->dtype != t.dtype || p->shape != t.shape)
      throw Error(label + ": " + kind + " '" + t.name + "' is " + describe(p->dtype, p->shape) + " in the file but " +
                  describe(t.dtype, t.shape) + " in manifest.json");
    check_quantization(*p, t, label, kind);
  }
}

json sample_json(const MemSample& s) {
  return {{"vm_hwm_bytes", s.vm_hwm}, {"vm_rss_bytes", s.vm_rss}, {"rss_anon_bytes", s.rss_anon},
          {"rss_file_bytes", s.rss_file}, {"rss_shmem_bytes", s.rss_shmem}};
}

void progress(const Request& req, const char* what, const Stage& st) {
  if (req.progress_fd < 0) return;
  std::string line = std::string(what) + " " + st.file + "\n";
  if (write(req.progress_fd, line.data(), line.size()) < 0) return;  // the parent only uses it to name a crash
}

void write_stats(const Request& req, const json& stats) {
  std::string line = stats.dump() + "\n";
  if (req.stats_path.empty()) {
    if (write(req.stats_fd, line.data(), line.size()) < 0) throw Error(std::string("cannot write the stats line: ") + strerror(errno));
    return;
  }
  write_atomic(req.stats_path, line);
}

}  // namespace

std::string output_file_stem(const std::string& name) {
  std::string s;
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    s += ok ? c : '_';
  }
  if (s.empty() || s[0] == '.') s = "_" + s;
  return s.substr(0, 200);
}

namespace {

// Stage `st`'s file, hashed and then loaded from the same open file (LiteRT dups the fd and maps it), so
// what runs is what was checked, not whatever the path names a moment later.
std::unique_ptr<LoadedStage> load_stage(LiteRtEnvironment env, int dirfd, const Stage& st, const Request& req) {
  std::string label = req.build_dir + "/" + st.file;
  Fd fd = open_member(dirfd, st.file, label);
  if (sha256_fd(fd.get(), label) != st.sha256)
    throw Error(req.build_dir + ": stage file " + st.file +
                " does not match its sha256 in manifest.json (corrupt or modified); rebuild with tflc compile");
  auto stage = std::make_unique<LoadedStage>(env, fd.get(), file_size(fd.get()), label);
  match(stage->inputs(), st.inputs, label, "input");
  match(stage->outputs(), st.outputs, label, "output");
  return stage;
}

// The buffers feeding the stage's inputs, in its signature's order, each from its manifest source.
std::vector<LiteRtTensorBuffer> feed(const LoadedStage& stage, const Stage& st, const std::map<std::string, Value>& values,
                                     const std::string& label) {
  std::vector<LiteRtTensorBuffer> in;
  for (const Port& p : stage.inputs()) {
    const TensorSpec* spec = nullptr;
    for (const TensorSpec& t : st.inputs)
      if (t.name == p.name) spec = &t;
    if (!spec) throw Error(label + " has an input tensor '" + p.name + "' the manifest does not name");
    auto it = values.find(spec->source->key());
    if (it == values.end()) throw Error(label + ": input '" + p.name + "' was dropped before this stage");
    const TensorMeta& have = it->second.meta;
    if (have.dtype != p.dtype || have.shape != p.shape)
      throw Error(label + ": input '" + p.name + "' gets " + describe(have.dtype, have.shape) + " from '" +
                  spec->source->key() + "' but the stage needs " + describe(p.dtype, p.shape));
    in.push_back(it->second.buf.get());
  }
  return in;
}

// The stage's outputs the manifest names join the live values (the others are freed with `outs`).
void keep(const LoadedStage& stage, const Stage& st, std::vector<Value>& outs, std::map<std::string, Value>& values) {
  for (size_t i = 0; i < outs.size(); ++i) {
    const std::string& name = stage.outputs()[i].name;
    for (const TensorSpec& t : st.outputs)
      if (t.name == name) values[name] = std::move(outs[i]);
  }
}

void write_outputs(const Manifest& m, const std::map<std::string, Value>& values, const std::string& dir) {
  std::set<std::string> stems;
  for (size_t i = 0; i < m.outputs.size(); ++i) {
    const TensorSpec& t = m.outputs[i];
    std::string stem = output_file_stem(t.name);
    if (!stems.insert(stem).second) stem += "_" + std::to_string(i);  // two names that sanitize alike
    stems.insert(stem);
    const Value& v = values.at(t.source->key());
    Locked lock(v.buf.get(), kLiteRtTensorBufferLockModeRead, "output '" + t.name + "'");
    write_atomic(dir + "/" + stem + ".npy", npy_header(v.meta), lock.addr(), v.meta.bytes());
  }
}

// Memory readings: the baseline, one per stage at its high point, and the largest.
class Stats {
 public:
  explicit Stats(const MemSample& baseline) : baseline_(baseline), at_peak_(baseline), hwm_(baseline.vm_hwm) {}

  void stage(int64_t index, const MemSample& s, double load_s, double run_s) {
    // The kernel folds the current RSS into VmHWM lazily, so a later reading can be lower than an earlier
    // one: the peak is the largest reading.
    hwm_ = std::max(hwm_, s.vm_hwm);
    if (s.vm_rss > at_peak_.vm_rss) {
      at_peak_ = s;
      peak_stage_ = index;
    }
    json rec = sample_json(s);
    rec["stage"] = index;
    rec["load_seconds"] = load_s;
    rec["run_seconds"] = run_s;
    stages_.push_back(rec);
  }

  json finish(double seconds) const {
    return {{"peak_vmhwm_bytes", std::max(hwm_, read_memory().vm_hwm)},
            {"at_peak", sample_json(at_peak_)},
            {"peak_stage", peak_stage_},
            {"baseline", sample_json(baseline_)},
            {"stages", stages_},
            {"seconds", seconds}};
  }

 private:
  MemSample baseline_, at_peak_;
  uint64_t hwm_;
  int64_t peak_stage_ = -1;
  json stages_ = json::array();
};

}  // namespace

void run(const Request& req) {
  Clock::time_point t0 = Clock::now();
  Fd dirfd = open_folder(req.build_dir);
  Manifest m = load_manifest(dirfd.get(), req.build_dir);
  std::map<std::string, std::string> files = assign_inputs(req.inputs, m);
  Environment env = make_environment();
  Stats stats(read_memory());
  std::map<std::string, Value> values = read_inputs(env.get(), files, m);  // destroyed before env
  prepare_output_dir(req.output_dir);
  // Every stage file must be there before the first one runs (its hash is checked right before it loads).
  for (const Stage& st : m.stages) open_member(dirfd.get(), st.file, req.build_dir + "/" + st.file);
  std::set<std::string> kept;
  for (const TensorSpec& t : m.outputs) kept.insert(t.source->key());

  for (const Stage& st : m.stages) {  // resident stages run like the others: one call per process
    Clock::time_point ts = Clock::now();
    progress(req, "load", st);
    std::unique_ptr<LoadedStage> stage = load_stage(env.get(), dirfd.get(), st, req);
    double load_s = seconds_since(ts);
    std::vector<LiteRtTensorBuffer> in = feed(*stage, st, values, req.build_dir + "/" + st.file);
    Clock::time_point tr = Clock::now();
    progress(req, "run", st);
    std::vector<Value> outs = stage->run(in);
    double run_s = seconds_since(tr);
    // Read while the stage is still loaded (weights mapped, arena allocated) and its outputs and the live
    // handoff tensors are held: this stage's high point.
    stats.stage(st.index, read_memory(), load_s, run_s);
    keep(*stage, st, outs, values);
    outs.clear();
    stage.reset();  // compiled model, model and mapping go before the next stage loads
    for (const auto& [name, after] : m.drop_after)
      if (after == st.index && !kept.count(name)) values.erase(name);
    progress(req, "done", st);
  }
  write_outputs(m, values, req.output_dir);
  write_stats(req, stats.finish(seconds_since(t0)));
}

}  // namespace tflc
