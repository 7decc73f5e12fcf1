// binary.cu
#include "common.cuh"
