// Owned LiteRT objects and one loaded stage, on the C API declared in litert_c.h.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "litert_c.h"

namespace tflc {

template <typename T, void (*Destroy)(T)>
struct Deleter {
  void operator()(T p) const {
    if (p) Destroy(p);
  }
};
template <typename T, void (*Destroy)(T)>
using Owned = std::unique_ptr<std::remove_pointer_t<T>, Deleter<T, Destroy>>;

using Environment = Owned<LiteRtEnvironment, LiteRtDestroyEnvironment>;
using Model = Owned<LiteRtModel, LiteRtDestroyModel>;
using Options = Owned<LiteRtOptions, LiteRtDestroyOptions>;
using CompiledModel = Owned<LiteRtCompiledModel, LiteRtDestroyCompiledModel>;
using TensorBuffer = Owned<LiteRtTensorBuffer, LiteRtDestroyTensorBuffer>;

// Throws Error("<what>: LiteRT <status name>") unless `s` is ok.
void check(LiteRtStatus s, const std::string& what);

Environment make_environment();

// A tensor value in a LiteRT-managed host buffer: model inputs are read into one, stage outputs are
// written into one, and the same buffer feeds later stages (no copy at a handoff).
struct Value {
  TensorMeta meta;
  TensorBuffer buf;
};

// A new host buffer for `meta` (rank at most 8, LiteRT's limit).
Value make_value(LiteRtEnvironment env, const TensorMeta& meta, const std::string& what);

// A buffer locked into host memory for the lifetime of this object.
class Locked {
 public:
  Locked(LiteRtTensorBuffer b, LiteRtTensorBufferLockMode mode, const std::string& what);
  ~Locked();
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;
  void* addr() const { return addr_; }

 private:
  LiteRtTensorBuffer buf_;
  void* addr_ = nullptr;
};

// A model tensor at a signature's input or output, as LiteRT sees it.
struct Port {
  std::string name;
  LiteRtRankedTensorType type;
  const DType* dtype;  // nullptr for element types a manifest cannot carry
  std::vector<int64_t> shape;
  int quantization = 0;  // LiteRtQuantizationTypeId: none, per tensor, per channel
  float scale = 0;       // per tensor
  int64_t zero_point = 0;
};

// One stage, loaded from an open file (LiteRT maps it: weights stay file-backed) and compiled for the CPU.
// Destroying it releases the compiled model, the model and its mapping.
class LoadedStage {
 public:
  LoadedStage(LiteRtEnvironment env, int fd, uint64_t size, const std::string& label);
  const std::vector<Port>& inputs() const { return inputs_; }
  const std::vector<Port>& outputs() const { return outputs_; }
  // Runs signature 0 on one buffer per input (in inputs() order); returns one new value per output.
  std::vector<Value> run(const std::vector<LiteRtTensorBuffer>& in);

 private:
  LiteRtEnvironment env_;
  std::string label_;
  Model model_;
  Options options_;
  CompiledModel compiled_;
  std::vector<Port> inputs_, outputs_;
};

}  // namespace tflc
