#include "manifest.h"

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

namespace tflc {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;  // TFLite shapes are int32
constexpr uint64_t kMaxElements = uint64_t{1} << 34;  // per tensor, as compiler/manifest.py
constexpr int64_t kMaxIndex = int64_t{1} << 62;
constexpr int kMaxDepth = 32;  // a format-1 manifest nests 6 deep; a deeper one is hostile

// Typed field access on a JSON value, with the field's path in every error.
class Check {
 public:
  explicit Check(std::string where) : where_(std::move(where)) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw Error(where_ + ": " + path + ": " + what);
  }

  const json& obj(const json& v, const std::string& path) const {
    if (!v.is_object()) fail(path, "expected an object, got " + kind(v));
    return v;
  }

  const json& list(const json& v, const std::string& path) const {
    if (!v.is_array()) fail(path, "expected a list, got " + kind(v));
    return v;
  }

  std::string str(const json& v, const std::string& path, bool empty = false) const {
    if (!v.is_string()) fail(path, "expected a string, got " + kind(v));
    const std::string& s = v.get_ref<const std::string&>();
    if ((s.empty() && !empty) || s.find('\0') != std::string::npos)
      fail(path, "expected a non-empty string without NUL bytes");
    return s;
  }

  void opt_str(const json& d, const char* key) const {
    if (d.contains(key) && !d[key].is_null()) str(d[key], key, true);
  }

  int64_t integer(const json& v, const std::string& path, int64_t lo = 0, int64_t hi = kMaxIndex) const {
    if (!v.is_number_integer()) fail(path, "expected an integer, got " + kind(v));
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
      fail(path, std::to_string(v.get<uint64_t>()) + " is out of range [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
    int64_t x = v.get<int64_t>();
    if (x < lo || x > hi)
      fail(path, std::to_string(x) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }

  bool boolean(const json& v, const std::string& path) const {
    if (!v.is_boolean()) fail(path, "expected true or false, got " + kind(v));
    return v.get<bool>();
  }

  std::string sha(const json& v, const std::string& path) const {
    bool ok = v.is_string() && v.get_ref<const std::string&>().size() == 64;
    if (ok)
      for (char c : v.get_ref<const std::string&>()) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
    if (!ok) fail(path, "expected a sha256 (64 lowercase hex digits)");
    return v.get<std::string>();
  }

  // A plain name inside the build folder: [A-Za-z0-9_][A-Za-z0-9_.-]{0,254}, not '.' or '..'.
  std::string file(const json& v, const std::string& path) const {
    bool ok = v.is_string();
    if (ok) {
      const std::string& s = v.get_ref<const std::string&>();
      ok = !s.empty() && s.size() <= 255 && s != "." && s != "..";
      for (size_t i = 0; ok && i < s.size(); ++i) {
        char c = s[i];
        bool word = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        ok = word || (i > 0 && (c == '.' || c == '-'));
      }
    }
    if (!ok) fail(path, "expected a plain file name inside the build folder (no path, no '..')");
    return v.get<std::string>();
  }

  void keys(const json& d, const std::string& path, std::initializer_list<const char*> required,
            std::initializer_list<const char*> optional, bool open = false) const {
    for (const char* k : required)
      if (!d.contains(k)) fail(path, std::string("missing field '") + k + "'");
    if (open) return;
    for (auto it = d.begin(); it != d.end(); ++it) {
      bool known = false;
      for (const char* k : required) known = known || it.key() == k;
      for (const char* k : optional) known = known || it.key() == k;
      if (!known) fail(path, "unknown field '" + it.key() + "'");
    }
  }

  static std::string kind(const json& v) {
    switch (v.type()) {
      case json::value_t::object: return "an object";
      case json::value_t::array: return "a list";
      case json::value_t::string: return "a string";
      case json::value_t::boolean: return "a boolean";
      case json::value_t::null: return "null";
      case json::value_t::number_integer:
      case json::value_t::number_unsigned: return "an integer";
      case json::value_t::number_float: return "a number";
      default: return "a value of another kind";
    }
  }

 private:
  std::string where_;
};

const json kNull;

const json& get(const json& d, const char* key) { return d.contains(key) ? d[key] : kNull; }

std::string at(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }

Quantization read_quantization(const json& d, const Check& c, const std::string& path,
                               const std::vector<int64_t>& shape) {
  c.obj(d, path);
  c.keys(d, path, {"scale", "zero_point"}, {"quantized_dimension"});
  const json& scale = c.list(d["scale"], path + ".scale");
  const json& zp = c.list(d["zero_point"], path + ".zero_point");
  if (scale.empty()) c.fail(path + ".scale", "empty");
  Quantization q;
  for (size_t i = 0; i < scale.size(); ++i) {
    const json& s = scale[i];
    if (!s.is_number() || !std::isfinite(s.get<double>()) || s.get<double>() <= 0)
      c.fail(at(path + ".scale", i), "expected a finite positive number");
    q.scale.push_back(s.get<double>());
  }
  if (zp.size() != scale.size())
    c.fail(path + ".zero_point", std::to_string(zp.size()) + " values for " + std::to_string(scale.size()) + " scales");
  for (size_t i = 0; i < zp.size(); ++i)
    q.zero_point.push_back(c.integer(zp[i], at(path + ".zero_point", i), -(int64_t{1} << 31), (int64_t{1} << 31) - 1));
  int64_t rank = static_cast<int64_t>(shape.size());
  const json& axis = get(d, "quantized_dimension");
  q.quantized_dimension = axis.is_null() && !d.contains("quantized_dimension")
                              ? 0
                              : c.integer(axis, path + ".quantized_dimension", 0, std::max<int64_t>(rank - 1, 0));
  if (q.scale.size() > 1 && (rank == 0 || shape[q.quantized_dimension] != static_cast<int64_t>(q.scale.size())))
    c.fail(path + ".scale", std::to_string(q.scale.size()) + " per-channel scales for axis " +
                                std::to_string(q.quantized_dimension) + " of shape " + shape_str(shape));
  return q;
}

Source read_source(const json& d, const Check& c, const std::string& path) {
  c.obj(d, path);
  Source s;
  if (d.contains("model_input")) {
    c.keys(d, path, {"model_input"}, {});
    s.model_input = c.str(d["model_input"], path + ".model_input");
    return s;
  }
  c.keys(d, path, {"stage", "output"}, {});
  s.stage = c.integer(d["stage"], path + ".stage");
  s.output = c.str(d["output"], path + ".output");
  return s;
}

TensorSpec read_tensor(const json& d, const Check& c, const std::string& path, bool sourced) {
  c.obj(d, path);
  if (sourced)
    c.keys(d, path, {"name", "shape", "dtype", "source"}, {"quantization", "shape_signature"});
  else
    c.keys(d, path, {"name", "shape", "dtype"}, {"quantization", "shape_signature"});
  TensorSpec t;
  t.name = c.str(d["name"], path + ".name");
  const json& shape = c.list(d["shape"], path + ".shape");
  for (size_t i = 0; i < shape.size(); ++i) t.shape.push_back(c.integer(shape[i], at(path + ".shape", i), 0, kMaxDim));
  if (t.shape.size() > 16) c.fail(path + ".shape", "rank " + std::to_string(t.shape.size()) + " is more than 16");
  try {
    element_count(t.shape, kMaxElements);
  } catch (const Error&) {
    c.fail(path + ".shape", "more elements than the cap of " + std::to_string(kMaxElements));
  }
  const json& sig = get(d, "shape_signature");
  if (!sig.is_null()) {
    c.list(sig, path + ".shape_signature");
    bool ok = sig.size() == t.shape.size();
    for (size_t i = 0; i < sig.size(); ++i) {
      int64_t s = c.integer(sig[i], at(path + ".shape_signature", i), -1, kMaxDim);
      ok = ok && (s == -1 || s == t.shape[i]);
    }
    if (!ok) c.fail(path + ".shape_signature", "must have the shape's rank and equal it except at -1");
  }
  std::string dtype = c.str(d["dtype"], path + ".dtype");
  t.dtype = dtype_by_name(dtype);
  if (!t.dtype) c.fail(path + ".dtype", "'" + dtype + "' is not a dtype a build's tensors may have");
  const json& q = get(d, "quantization");
  if (!q.is_null()) t.quantization = read_quantization(q, c, path + ".quantization", t.shape);
  if (sourced) t.source = read_source(d["source"], c, path + ".source");
  return t;
}

std::vector<TensorSpec> read_tensors(const json& v, const Check& c, const std::string& path, bool sourced) {
  std::vector<TensorSpec> out;
  c.list(v, path);
  for (size_t i = 0; i < v.size(); ++i) out.push_back(read_tensor(v[i], c, at(path, i), sourced));
  return out;
}

Stage read_stage(const json& d, const Check& c, const std::string& path) {
  c.obj(d, path);
  c.keys(d, path, {"index", "file", "sha256", "inputs", "outputs"}, {}, /*open=*/true);  // newer writers may add fields
  Stage s;
  s.index = c.integer(d["index"], path + ".index");
  s.file = c.file(d["file"], path + ".file");
  if (d.contains("bytes")) c.integer(d["bytes"], path + ".bytes");
  s.sha256 = c.sha(d["sha256"], path + ".sha256");
  s.inputs = read_tensors(d["inputs"], c, path + ".inputs", true);
  s.outputs = read_tensors(d["outputs"], c, path + ".outputs", false);
  if (d.contains("ops")) {
    const json& ops = c.list(d["ops"], path + ".ops");
    for (size_t i = 0; i < ops.size(); ++i) c.str(ops[i], at(path + ".ops", i));
  }
  if (d.contains("resident")) s.resident = c.boolean(d["resident"], path + ".resident");
  if (d.contains("min_runtime") && !d["min_runtime"].is_null()) c.str(d["min_runtime"], path + ".min_runtime", true);
  return s;
}

void unique(const std::vector<std::string>& names, const Check& c, const std::string& path) {
  std::set<std::string> seen;
  for (const std::string& n : names)
    if (!seen.insert(n).second) c.fail(path, "'" + n + "' appears twice");
}

template <typename T, typename F>
std::vector<std::string> names_of(const std::vector<T>& items, F f) {
  std::vector<std::string> out;
  for (const T& x : items) out.push_back(f(x));
  return out;
}

std::vector<std::string> tensor_names(const std::vector<TensorSpec>& ts) {
  return names_of(ts, [](const TensorSpec& t) { return t.name; });
}

// A source must name a model input, or an output of an earlier stage that no later stage (before k) redefined.
void check_source(const Source& s, const std::set<std::string>& model_inputs,
                  const std::map<std::string, int64_t>& latest, int64_t k, const Check& c, const std::string& path) {
  if (s.stage < 0) {
    if (!model_inputs.count(s.model_input)) c.fail(path, "model input '" + s.model_input + "' does not exist");
    return;
  }
  auto it = latest.find(s.output);
  if (s.stage >= k || it == latest.end() || it->second != s.stage)
    c.fail(path, "output '" + s.output + "' of stage " + std::to_string(s.stage) + " is not produced before this point");
}

void check_contract(Manifest& m, const json& handoff, const Check& c) {
  if (m.stages.empty()) c.fail("stages", "empty: a build has at least one stage");
  unique(tensor_names(m.inputs), c, "inputs");
  unique(tensor_names(m.outputs), c, "outputs");
  unique(names_of(m.stages, [](const Stage& s) { return s.file; }), c, "stages[].file");
  std::set<std::string> model_inputs;
  for (const TensorSpec& t : m.inputs) model_inputs.insert(t.name);
  std::map<std::string, int64_t> latest;
  std::map<std::string, int64_t> last_use;
  for (size_t k = 0; k < m.stages.size(); ++k) {
    const Stage& st = m.stages[k];
    std::string path = at("stages", k);
    if (st.index != static_cast<int64_t>(k))
      c.fail(path + ".index", "is " + std::to_string(st.index) + "; stages must be listed in order 0, 1, ...");
    unique(tensor_names(st.inputs), c, path + ".inputs");
    unique(tensor_names(st.outputs), c, path + ".outputs");
    for (size_t i = 0; i < st.inputs.size(); ++i) {
      check_source(*st.inputs[i].source, model_inputs, latest, static_cast<int64_t>(k), c,
                   at(path + ".inputs", i) + ".source");
      last_use[st.inputs[i].source->key()] = static_cast<int64_t>(k);
    }
    for (const TensorSpec& t : st.outputs) latest[t.name] = static_cast<int64_t>(k);
  }
  int64_t n = static_cast<int64_t>(m.stages.size());
  std::set<std::string> kept;
  for (size_t i = 0; i < m.outputs.size(); ++i) {
    check_source(*m.outputs[i].source, model_inputs, latest, n, c, at("outputs", i) + ".source");
    kept.insert(m.outputs[i].source->key());
  }
  c.list(handoff, "handoff");
  std::set<std::string> seen;
  for (size_t i = 0; i < handoff.size(); ++i) {
    std::string path = at("handoff", i);
    const json& h = c.obj(handoff[i], path);
    c.keys(h, path, {"name", "consumed_by", "drop_after"}, {"produced_by"});
    std::string name = c.str(h["name"], path + ".name");
    if (!seen.insert(name).second) c.fail("handoff[].name", "'" + name + "' appears twice");
    if (!get(h, "produced_by").is_null()) c.integer(h["produced_by"], path + ".produced_by");
    const json& consumed = c.list(h["consumed_by"], path + ".consumed_by");
    for (size_t j = 0; j < consumed.size(); ++j) c.integer(consumed[j], at(path + ".consumed_by", j));
    if (!last_use.count(name) && !kept.count(name)) c.fail(path, "'" + name + "' is used by no stage");
    if (h["drop_after"].is_null()) continue;
    int64_t drop = c.integer(h["drop_after"], path + ".drop_after");
    int64_t last = last_use.count(name) ? last_use[name] : 0;
    if (kept.count(name))
      c.fail(path + ".drop_after", "'" + name + "' is dropped after stage " + std::to_string(drop) + " but is a model output");
    if (drop < last || drop >= n)
      c.fail(path + ".drop_after", "'" + name + "' is dropped after stage " + std::to_string(drop) + " but stage " +
                                       std::to_string(last) + " still uses it");
    m.drop_after[name] = drop;
  }
}

// Nesting is bounded while parsing, so a hostile file cannot exhaust the stack of anything that walks it.
bool depth_guard(int depth, json::parse_event_t, json&) {
  if (depth > kMaxDepth) throw Error("nested too deeply to be a tflc manifest");
  return true;
}

}  // namespace

Manifest parse_manifest(const std::string& text, const std::string& where) {
  if (text.size() > kManifestMaxBytes)
    throw Error(where + ": " + std::to_string(text.size()) + " bytes is more than a manifest's cap of " +
                std::to_string(kManifestMaxBytes));
  json d;
  try {
    d = json::parse(text, depth_guard);
  } catch (const json::exception& e) {
    std::string why = e.what();
    throw Error(where + ": unreadable manifest (" + why.substr(0, why.find('\n')) + ")");
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
  Check c(where);
  c.obj(d, "manifest");
  const json& format = get(d, "format");
  // The schema's `"const": 1`: the number 1 (1.0 too), not `true`.
  if (!format.is_number() || format.get<double>() != 1.0) c.fail("format", "not a tflc manifest of format 1");
  c.keys(d, "manifest", {"format", "inputs", "outputs", "stages"}, {}, /*open=*/true);
  Manifest m;
  m.inputs = read_tensors(d["inputs"], c, "inputs", false);
  m.outputs = read_tensors(d["outputs"], c, "outputs", true);
  const json& stages = c.list(d["stages"], "stages");
  for (size_t k = 0; k < stages.size(); ++k) m.stages.push_back(read_stage(stages[k], c, at("stages", k)));
  if (d.contains("tflc_version")) c.str(d["tflc_version"], "tflc_version", true);
  if (d.contains("pipeline")) c.str(d["pipeline"], "pipeline", true);
  c.opt_str(d, "source");
  c.opt_str(d, "fixture");
  if (!get(d, "source_sha256").is_null()) c.sha(d["source_sha256"], "source_sha256");
  if (d.contains("quantization")) c.str(d["quantization"], "quantization");
  const json& sample = get(d, "sample_input");
  if (!sample.is_null()) {
    c.obj(sample, "sample_input");
    c.keys(sample, "sample_input", {"file", "sha256"}, {});
    std::string file = c.file(sample["file"], "sample_input.file");
    c.sha(sample["sha256"], "sample_input.sha256");
    for (const Stage& s : m.stages)
      if (s.file == file) c.fail("sample_input.file", "is also a stage file");
  }
  check_contract(m, d.contains("handoff") ? d["handoff"] : json::array(), c);
  return m;
}

}  // namespace tflc
