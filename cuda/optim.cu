// optim.cu
#include "common.cuh"
