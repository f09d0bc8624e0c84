// manifest.json of a build folder, read and validated before anything runs.
//
// The rules are those of the Python runtime's typed manifest (compiler/manifest.py) and
// compiler/manifest.schema.json: field types and ranges, plain stage file names (no path, no '..'),
// and the handoff contract (sources name model inputs or earlier stages' outputs, drop_after not before
// a later use). A manifest that breaks one is a single Error naming the field.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common.h"

namespace tflc {

struct Source {
  std::string model_input;  // set for a model input
  int64_t stage = -1;       // else the producing stage ...
  std::string output;       // ... and its output's name
  // The name of the value in the runner's table of live tensors.
  const std::string& key() const { return stage < 0 ? model_input : output; }
};

struct Quantization {
  std::vector<double> scale;
  std::vector<int64_t> zero_point;
  int64_t quantized_dimension = 0;
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  const DType* dtype = nullptr;
  std::optional<Quantization> quantization;
  std::optional<Source> source;  // stage inputs and model outputs
};

struct Stage {
  int64_t index = 0;
  std::string file;
  std::string sha256;
  std::vector<TensorSpec> inputs, outputs;
  bool resident = false;
};

struct Manifest {
  std::vector<TensorSpec> inputs, outputs;
  std::vector<Stage> stages;
  std::map<std::string, int64_t> drop_after;  // handoff tensor -> the stage after which it can be freed
};

constexpr size_t kManifestMaxBytes = 16u << 20;  // compiler/manifest.py MAX_BYTES

// Parse and validate manifest.json's text; `where` prefixes every error.
Manifest parse_manifest(const std::string& text, const std::string& where);

}  // namespace tflc
