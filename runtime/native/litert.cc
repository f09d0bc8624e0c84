#include "litert.h"

#include <cstring>

namespace tflc {
namespace {

// LiteRtStatus values (litert_common.h); the 2.3 library exports no LiteRtGetStatusString.
const char* status_name(LiteRtStatus s) {
  switch (s) {
    case 1: return "invalid argument";
    case 2: return "memory allocation failure";
    case 3: return "runtime failure";
    case 4: return "missing input tensor";
    case 5: return "unsupported";
    case 6: return "not found";
    case 7: return "timeout expired";
    case 8: return "wrong version";
    case 9: return "unknown error";
    case 10: return "already exists";
    case 100: return "cancelled";
    case 500: return "file I/O error";
    case 501: return "invalid flatbuffer";
    case 502: return "dynamic loading error";
    case 503: return "serialization error";
    case 504: return "compilation error";
    case 1000: return "index out of bounds";
    case 1001: return "invalid IR type";
    case 1002: return "invalid graph invariant";
    default: return "error";
  }
}

Port port(LiteRtTensor t, const std::string& label) {
  Port p{};
  const char* name = nullptr;
  check(LiteRtGetTensorName(t, &name), label + ": tensor name");
  p.name = name ? name : "";
  LiteRtTensorTypeId id;
  check(LiteRtGetTensorTypeId(t, &id), label + ": tensor type of '" + p.name + "'");
  if (id != kLiteRtRankedTensorType) throw Error(label + ": tensor '" + p.name + "' has no fixed rank");
  check(LiteRtGetRankedTensorType(t, &p.type), label + ": tensor type of '" + p.name + "'");
  if (p.type.layout.rank > LITERT_TENSOR_MAX_RANK) throw Error(label + ": tensor '" + p.name + "' has rank over 8");
  p.dtype = dtype_by_litert(p.type.element_type);
  for (unsigned i = 0; i < p.type.layout.rank; ++i) p.shape.push_back(p.type.layout.dimensions[i]);
  return p;
}

TensorBuffer host_buffer(LiteRtEnvironment env, const Port& p, size_t bytes, const std::string& label) {
  LiteRtTensorBuffer b = nullptr;
  check(LiteRtCreateManagedTensorBuffer(env, kLiteRtTensorBufferTypeHostMemory, &p.type, bytes, &b),
        label + ": buffer for '" + p.name + "'");
  return TensorBuffer(b);
}

size_t byte_size(const Port& p, const std::string& label) {
  if (!p.dtype) throw Error(label + ": tensor '" + p.name + "' has an element type a build cannot hand off");
  for (int64_t d : p.shape)
    if (d < 0) throw Error(label + ": tensor '" + p.name + "' has a dynamic shape " + shape_str(p.shape));
  return element_count(p.shape, uint64_t{1} << 40) * p.dtype->size;
}

}  // namespace

void check(LiteRtStatus s, const std::string& what) {
  if (s != 0) throw Error(what + ": LiteRT " + status_name(s) + " (status " + std::to_string(s) + ")");
}

Environment make_environment() {
  LiteRtEnvironment env = nullptr;
  check(LiteRtCreateEnvironment(0, nullptr, &env), "LiteRT environment");
  return Environment(env);
}

LoadedStage::LoadedStage(LiteRtEnvironment env, int fd, uint64_t size, const std::string& label)
    : env_(env), label_(label) {
  LiteRtModel m = nullptr;
  check(LiteRtCreateModelFromFd(env, fd, 0, size, &m), label + ": LiteRT cannot load it");
  model_.reset(m);
  LiteRtOptions o = nullptr;
  check(LiteRtCreateOptions(&o), label + ": options");
  options_.reset(o);
  check(LiteRtSetOptionsHardwareAccelerators(o, kLiteRtHwAcceleratorCpu), label + ": options");
  LiteRtCompiledModel c = nullptr;
  check(LiteRtCreateCompiledModel(env, m, o, &c), label + ": LiteRT cannot compile it for the CPU");
  compiled_.reset(c);
  // Stages carry no signature defs; LiteRT then makes signature 0 from the main subgraph's inputs/outputs.
  LiteRtParamIndex nsig = 0;
  check(LiteRtGetNumModelSignatures(m, &nsig), label + ": signatures");
  if (nsig < 1) throw Error(label + ": LiteRT found no signature to run");
  LiteRtSignature sig = nullptr;
  check(LiteRtGetModelSignature(m, 0, &sig), label + ": signature 0");
  LiteRtParamIndex nin = 0, nout = 0;
  check(LiteRtGetNumSignatureInputs(sig, &nin), label + ": inputs");
  check(LiteRtGetNumSignatureOutputs(sig, &nout), label + ": outputs");
  for (LiteRtParamIndex i = 0; i < nin; ++i) {
    LiteRtTensor t = nullptr;
    check(LiteRtGetSignatureInputTensorByIndex(sig, i, &t), label + ": input " + std::to_string(i));
    inputs_.push_back(port(t, label));
  }
  for (LiteRtParamIndex i = 0; i < nout; ++i) {
    LiteRtTensor t = nullptr;
    check(LiteRtGetSignatureOutputTensorByIndex(sig, i, &t), label + ": output " + std::to_string(i));
    outputs_.push_back(port(t, label));
  }
}

std::vector<Array> LoadedStage::run(const std::vector<const Array*>& in) {
  std::vector<TensorBuffer> owned;
  std::vector<LiteRtTensorBuffer> ins, outs;
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const Port& p = inputs_[i];
    size_t bytes = byte_size(p, label_);
    if (in[i]->data.size() != bytes)
      throw Error(label_ + ": input '" + p.name + "' needs " + std::to_string(bytes) + " bytes, got " +
                  std::to_string(in[i]->data.size()));
    owned.push_back(host_buffer(env_, p, bytes, label_));
    void* addr = nullptr;
    check(LiteRtLockTensorBuffer(owned.back().get(), &addr, kLiteRtTensorBufferLockModeWrite), label_ + ": lock");
    if (bytes) std::memcpy(addr, in[i]->data.data(), bytes);
    check(LiteRtUnlockTensorBuffer(owned.back().get()), label_ + ": unlock");
    ins.push_back(owned.back().get());
  }
  for (const Port& p : outputs_) {
    owned.push_back(host_buffer(env_, p, byte_size(p, label_), label_));
    outs.push_back(owned.back().get());
  }
  check(LiteRtRunCompiledModel(compiled_.get(), 0, ins.size(), ins.data(), outs.size(), outs.data()),
        label_ + ": LiteRT failed to run it");
  std::vector<Array> result;
  for (size_t i = 0; i < outputs_.size(); ++i) {
    const Port& p = outputs_[i];
    Array a;
    a.dtype = p.dtype;
    a.shape = p.shape;
    a.data.resize(byte_size(p, label_));
    void* addr = nullptr;
    check(LiteRtLockTensorBuffer(outs[i], &addr, kLiteRtTensorBufferLockModeRead), label_ + ": lock");
    if (!a.data.empty()) std::memcpy(a.data.data(), addr, a.data.size());
    check(LiteRtUnlockTensorBuffer(outs[i]), label_ + ": unlock");
    result.push_back(std::move(a));
  }
  return result;
}

}  // namespace tflc
