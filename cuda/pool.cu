// pool.cu
#include "common.cuh"
