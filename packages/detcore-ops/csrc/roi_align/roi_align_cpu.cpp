// Placeholder registration so the module links while this op family is being written.
#include "common/ops.h"

namespace detcore {
void register_roi_align(pybind11::module_& m) {}
}  // namespace detcore
