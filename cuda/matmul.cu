// matmul.cu
#include "common.cuh"
