// unary.cu
#include "common.cuh"
